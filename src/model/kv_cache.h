// The paged KV cache's memory: per layer one or two pools of fixed-size blocks. What a token
// stores is the model's business (KvLayout, from its config):
//
//   GQA (every family but MLA): k(layer), v(layer): [num_blocks, block_size, num_kv_heads, head_dim]
//   MLA (DeepSeek-V3, Kimi K2): latent(layer): [num_blocks, block_size, kv_lora_rank + qk_rope_head_dim]
//                               (the normed latent, then the roped key; k(layer) is its 4-D view)
//
// Blocks, block tables, prefix caching and preemption see only blocks of block_size tokens, so
// they work unchanged on either layout.
//
// Which block belongs to which sequence is not known here: callers (the engine's
// KvBlockManager, or tests) hand block tables to MoeTransformer::forward.
#pragma once

#include <string>
#include <vector>

#include "model/config.h"
#include "moe/backend.h"
#include "moe/tensor.h"

namespace moe {

// Per token per layer: num_pools pools of [num_heads, head_dim] elements.
struct KvLayout {
    int64_t num_pools = 2;  // 2: K and V; 1: the MLA latent row
    int64_t num_heads = 0;
    int64_t head_dim = 0;
    int64_t elements_per_token() const { return num_pools * num_heads * head_dim; }
    std::string describe() const;  // "K+V 8 x 128 per layer", "latent 576 per layer"
};

KvLayout kv_layout(const ModelConfig& config);

struct KvCacheOptions {
    int64_t num_blocks = 0;
    int64_t block_size = 16;    // tokens per block
    DType dtype = DType::kF32;  // f32 or bf16
};

class KvCache {
public:
    // Allocates the pools on `backend`. Fails (naming the bytes) when the size overflows or
    // the allocation fails.
    static StatusOr<KvCache> create(Backend& backend, const ModelConfig& config, const KvCacheOptions& options);

    // Bytes one block takes over all layers and pools.
    static int64_t bytes_per_block(const ModelConfig& config, int64_t block_size, DType dtype);

    TensorView k(int64_t layer) const { return view(k_[static_cast<size_t>(layer)]); }
    // Precondition: layout().num_pools == 2.
    TensorView v(int64_t layer) const { return view(v_[static_cast<size_t>(layer)]); }
    // The MLA latent pool as [num_blocks, block_size, row]; precondition: layout().num_pools == 1.
    TensorView latent(int64_t layer) const;
    const KvLayout& layout() const { return layout_; }
    int64_t num_blocks() const { return num_blocks_; }
    int64_t block_size() const { return block_size_; }
    int64_t num_layers() const { return static_cast<int64_t>(k_.size()); }
    DType dtype() const { return dtype_; }

    // ---- raw regions, for KV transports (src/disagg): a block of the cache is num_regions()
    // regions of region_bytes() each, one per (layer, pool), numbered layer-major (GQA: layer l's
    // K is region 2l, its V 2l + 1; MLA: layer l's latent is region l). Block b of region r
    // lives at region_base(r) + b * region_bytes(), contiguous. Pointers are the backend's
    // (host memory on the CPU backend, see device()); valid for the cache's lifetime.
    int64_t num_regions() const { return num_layers() * layout_.num_pools; }
    int64_t region_bytes() const {
        return block_size_ * layout_.num_heads * layout_.head_dim * static_cast<int64_t>(dtype_size(dtype_));
    }
    // Precondition: 0 <= region < num_regions().
    void* region_base(int64_t region) const;
    const Device& device() const { return device_; }

private:
    TensorView view(const DeviceBuffer& b) const;

    std::vector<DeviceBuffer> k_;
    std::vector<DeviceBuffer> v_;
    int64_t num_blocks_ = 0;
    int64_t block_size_ = 0;
    KvLayout layout_;
    DType dtype_ = DType::kF32;
    Device device_{};
};

}  // namespace moe
