// Counting sort of (token, slot) pairs by expert; see moe_permute_plan.h. Three launches and a CUB
// scan: count (per chunk, per expert), ExclusiveSum over the expert-major counts, scatter (row_of,
// token_of, offsets), gather (x rows). Memory: the ids twice, 2 small count arrays, and x gathered:
// P * H floats read and written.
#pragma once

#include <cstdint>

#include "kernels/common/device_utils.cuh"
#include "kernels/moe_permute/moe_permute_plan.h"

namespace moe::kernels {

// This thread's expert key (-1: no pair or a bad id) and the per-warp counts in `wc` [warps][E].
// Ends with a __syncthreads: wc is complete for the chunk.
__device__ __forceinline__ int permute_chunk_counts(const int32_t* __restrict__ ids, int64_t num_pairs, int num_experts,
                                                    int* wc, unsigned* peers, KernelError* err) {
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    for (int i = threadIdx.x; i < kPermuteWarps * num_experts; i += blockDim.x) wc[i] = 0;
    const int64_t p = blockIdx.x * static_cast<int64_t>(kPermuteChunk) + threadIdx.x;
    int key = -1;
    if (p < num_pairs) {
        key = ids[p];
        if (key < 0 || key >= num_experts) {
            report_bad_row(err, p);
            key = -1;
        }
    }
    *peers = __match_any_sync(0xffffffffu, key);
    __syncthreads();  // wc zeroed
    // One leader per distinct key of the warp writes its count: plain stores, no atomics.
    if (key >= 0 && lane == __ffs(*peers) - 1) wc[warp * num_experts + key] = __popc(*peers);
    __syncthreads();
    return key;
}

__global__ void __launch_bounds__(kPermuteChunk)
    moe_permute_count_kernel(const int32_t* __restrict__ ids, int64_t num_pairs, int num_experts, int64_t num_chunks,
                             int32_t* __restrict__ counts, KernelError* err) {
    extern __shared__ int wc[];
    unsigned peers;
    permute_chunk_counts(ids, num_pairs, num_experts, wc, &peers, err);
    for (int e = threadIdx.x; e < num_experts; e += blockDim.x) {
        int n = 0;
        for (int w = 0; w < kPermuteWarps; ++w) n += wc[w * num_experts + e];
        counts[e * num_chunks + blockIdx.x] = n;
    }
}

__global__ void __launch_bounds__(kPermuteChunk)
    moe_permute_scatter_kernel(const int32_t* __restrict__ ids, int64_t num_pairs, int num_experts, int64_t num_chunks,
                               int64_t top_k, const int32_t* __restrict__ counts, const int32_t* __restrict__ bases,
                               int32_t* __restrict__ row_of, int32_t* __restrict__ token_of,
                               int32_t* __restrict__ offsets) {
    extern __shared__ int wc[];
    unsigned peers;
    // Ids were checked (and reported) by the count kernel.
    const int key = permute_chunk_counts(ids, num_pairs, num_experts, wc, &peers, nullptr);
    for (int e = threadIdx.x; e < num_experts; e += blockDim.x) {
        int run = 0;
        for (int w = 0; w < kPermuteWarps; ++w) {
            const int n = wc[w * num_experts + e];
            wc[w * num_experts + e] = run;
            run += n;
        }
    }
    __syncthreads();
    const int lane = threadIdx.x & 31;
    const int64_t p = blockIdx.x * static_cast<int64_t>(kPermuteChunk) + threadIdx.x;
    if (p < num_pairs) {
        if (key >= 0) {
            const int rank = __popc(peers & ((1u << lane) - 1u));
            const int32_t row =
                bases[key * num_chunks + blockIdx.x] + wc[(threadIdx.x >> 5) * num_experts + key] + rank;
            row_of[p] = row;
            token_of[row] = static_cast<int32_t>(p / top_k);
        } else {
            row_of[p] = -1;
        }
    }
    if (blockIdx.x == 0) {
        for (int e = threadIdx.x; e < num_experts; e += blockDim.x) offsets[e] = bases[e * num_chunks];
        if (threadIdx.x == 0) {
            const int64_t last = static_cast<int64_t>(num_experts) * num_chunks - 1;
            offsets[num_experts] = bases[last] + counts[last];
        }
    }
}

// x_permuted[r] = x[token_of[r]], one CTA per row (grid-stride). Rows that a bad id left without a
// token (token_of outside [0, T)) are zero-filled.
__global__ void moe_permute_gather_kernel(const float* __restrict__ x, const int32_t* __restrict__ token_of,
                                          float* __restrict__ x_permuted, int64_t num_rows, int64_t num_tokens,
                                          int64_t hidden) {
    for (int64_t r = blockIdx.x; r < num_rows; r += gridDim.x) {
        const int64_t t = token_of[r];
        const bool ok = t >= 0 && t < num_tokens;
        for (int64_t h = threadIdx.x; h < hidden; h += blockDim.x)
            x_permuted[r * hidden + h] = ok ? x[t * hidden + h] : 0.0f;
    }
}

}  // namespace moe::kernels
