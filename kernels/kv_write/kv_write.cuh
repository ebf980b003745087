// KV write: one block per token (grid-stride). With the cache laid out [num_blocks, block_size,
// kv_heads, head_dim] and contiguous, slot s = block * block_size + offset starts at s * row, so
// the block/offset split is not needed here. Memory-bound: 2 rows read, 2 rows written per token.
#pragma once

#include <cstdint>

#include "kernels/common/device_utils.cuh"

namespace moe::kernels {

template <typename CacheT>
__global__ void kv_write_kernel(const float* __restrict__ k, const float* __restrict__ v,
                                const int64_t* __restrict__ slot_mapping, CacheT* __restrict__ k_cache,
                                CacheT* __restrict__ v_cache, int64_t num_tokens, int64_t row, int64_t num_slots,
                                KernelError* err) {
    for (int64_t t = blockIdx.x; t < num_tokens; t += gridDim.x) {
        const int64_t slot = slot_mapping[t];
        if (slot == -1) continue;
        if (slot < 0 || slot >= num_slots) {
            // NOTE: never write outside the cache; skip the token and report it.
            if (threadIdx.x == 0) report_bad_row(err, t);
            continue;
        }
        const float* kt = k + t * row;
        const float* vt = v + t * row;
        CacheT* kc = k_cache + slot * row;
        CacheT* vc = v_cache + slot * row;
        for (int64_t i = threadIdx.x; i < row; i += blockDim.x) {
            store_from_f32(kc, i, kt[i]);
            store_from_f32(vc, i, vt[i]);
        }
    }
}

}  // namespace moe::kernels
