#include "model/kv_cache.h"

#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace moe {

KvLayout kv_layout(const ModelConfig& config) {
    if (config.is_mla())
        return {.num_pools = 1, .num_heads = 1, .head_dim = config.mla.kv_lora_rank + config.mla.qk_rope_head_dim};
    return {.num_pools = 2, .num_heads = config.num_kv_heads, .head_dim = config.head_dim};
}

std::string KvLayout::describe() const {
    if (num_pools == 1) return "latent " + std::to_string(num_heads * head_dim) + " per layer";
    return "K+V " + std::to_string(num_heads) + " x " + std::to_string(head_dim) + " per layer";
}

int64_t KvCache::bytes_per_block(const ModelConfig& config, int64_t block_size, DType dtype) {
    return config.num_layers * block_size * kv_layout(config).elements_per_token() *
           static_cast<int64_t>(dtype_size(dtype));
}

StatusOr<KvCache> KvCache::create(Backend& backend, const ModelConfig& config, const KvCacheOptions& options) {
    if (options.dtype != DType::kF32 && options.dtype != DType::kBF16)
        return invalid_argument(std::string("kv cache dtype must be f32 or bf16, got ") + dtype_name(options.dtype));
    if (options.block_size <= 0 || options.block_size > 1024)
        return invalid_argument("kv cache block_size must be in [1, 1024], got " + std::to_string(options.block_size));
    if (options.num_blocks <= 0 || options.num_blocks > (int64_t{1} << 31))
        return invalid_argument("kv cache num_blocks must be in [1, 2^31], got " + std::to_string(options.num_blocks));
    const KvLayout layout = kv_layout(config);
    const int64_t per_token = layout.num_heads * layout.head_dim * static_cast<int64_t>(dtype_size(options.dtype));
    // NOTE: every factor is bounded above (config checks cap heads and dims), so the product is
    // checked against int64 by dividing back.
    const int64_t per_block = per_token * options.block_size;
    if (per_block <= 0 || options.num_blocks > std::numeric_limits<int64_t>::max() / per_block)
        return invalid_argument("kv cache size overflows");
    const int64_t layer_bytes = per_block * options.num_blocks;

    KvCache cache;
    cache.num_blocks_ = options.num_blocks;
    cache.block_size_ = options.block_size;
    cache.layout_ = layout;
    cache.dtype_ = options.dtype;
    cache.device_ = backend.device();
    std::vector<uint8_t> zeros;
    for (int64_t l = 0; l < config.num_layers; ++l) {
        for (auto* pool : {&cache.k_, &cache.v_}) {
            if (pool == &cache.v_ && layout.num_pools == 1) continue;
            auto buf = DeviceBuffer::allocate(backend, static_cast<size_t>(layer_bytes));
            if (!buf.ok())
                return buf.status().with_context("kv cache layer " + std::to_string(l) + " (" +
                                                 std::to_string(layer_bytes) + " bytes)");
            pool->push_back(std::move(buf).value());
        }
    }
    return cache;
}

TensorView KvCache::view(const DeviceBuffer& b) const {
    return TensorView::make(b.data(), dtype_, {num_blocks_, block_size_, layout_.num_heads, layout_.head_dim}, device_);
}

void* KvCache::region_base(int64_t region) const {
    const size_t layer = static_cast<size_t>(region / layout_.num_pools);
    const DeviceBuffer& b = (region % layout_.num_pools == 0) ? k_[layer] : v_[layer];
    return b.data();
}

TensorView KvCache::latent(int64_t layer) const {
    return TensorView::make(k_[static_cast<size_t>(layer)].data(), dtype_,
                            {num_blocks_, block_size_, layout_.num_heads * layout_.head_dim}, device_);
}

}  // namespace moe
