// The paged KV cache's memory: per layer one K and one V pool of fixed-size blocks.
//
//   k(layer): [num_blocks, block_size, num_kv_heads, head_dim]   (same for v)
//
// Which block belongs to which sequence is not known here: callers (the engine's
// KvBlockManager, or tests) hand block tables to MoeTransformer::forward.
#pragma once

#include <vector>

#include "model/config.h"
#include "moe/backend.h"
#include "moe/tensor.h"

namespace moe {

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

    // Bytes one block takes over all layers, K and V.
    static int64_t bytes_per_block(const ModelConfig& config, int64_t block_size, DType dtype);

    TensorView k(int64_t layer) const { return view(k_[static_cast<size_t>(layer)]); }
    TensorView v(int64_t layer) const { return view(v_[static_cast<size_t>(layer)]); }
    int64_t num_blocks() const { return num_blocks_; }
    int64_t block_size() const { return block_size_; }
    int64_t num_layers() const { return static_cast<int64_t>(k_.size()); }
    DType dtype() const { return dtype_; }

private:
    TensorView view(const DeviceBuffer& b) const;

    std::vector<DeviceBuffer> k_;
    std::vector<DeviceBuffer> v_;
    int64_t num_blocks_ = 0;
    int64_t block_size_ = 0;
    int64_t num_kv_heads_ = 0;
    int64_t head_dim_ = 0;
    DType dtype_ = DType::kF32;
    Device device_{};
};

}  // namespace moe
