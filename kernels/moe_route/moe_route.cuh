// Softmax top-k: one warp per token. The picks come in (logit desc, id asc) order, so instead of a
// "taken" set each pick is the best candidate strictly after the previous one in that order: no
// shared memory, top_k passes over the (L1-resident) row. Reductions are butterflies over the warp,
// so every lane agrees on each pick and the result is deterministic.
// Memory: E floats read, 2 * top_k values written per token.
#pragma once

#include <climits>
#include <cstdint>

#include "kernels/common/device_utils.cuh"

namespace moe::kernels {

// (v, e) beats (v2, e2) when v > v2, or v == v2 and e < e2. e == INT_MAX means "no candidate".
__device__ __forceinline__ bool route_better(float v, int e, float v2, int e2) {
    if (e2 == INT_MAX) return e != INT_MAX;
    if (e == INT_MAX) return false;
    return v > v2 || (v == v2 && e < e2);
}

__global__ void moe_route_kernel(const float* __restrict__ logits, int32_t* __restrict__ topk_ids,
                                 float* __restrict__ topk_weights, int64_t num_tokens, int num_experts, int top_k,
                                 bool renormalize) {
    const int lane = threadIdx.x & 31;
    const int64_t warps_per_grid = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
    for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + threadIdx.x / 32; t < num_tokens;
         t += warps_per_grid) {
        const float* row = logits + t * num_experts;
        float mx = -INFINITY;
        for (int e = lane; e < num_experts; e += 32) mx = fmaxf(mx, row[e]);
        for (int offset = 16; offset > 0; offset >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, offset));
        float sum = 0.0f;
        for (int e = lane; e < num_experts; e += 32) sum += expf(row[e] - mx);
        sum = warp_sum(sum);
        int32_t* ids = topk_ids + t * top_k;
        float* weights = topk_weights + t * top_k;
        float last_v = 0.0f;
        int last_e = -1;
        float picked = 0.0f;
        for (int j = 0; j < top_k; ++j) {
            float best_v = 0.0f;
            int best_e = INT_MAX;
            for (int e = lane; e < num_experts; e += 32) {
                const float v = row[e];
                const bool after_last = j == 0 || v < last_v || (v == last_v && e > last_e);
                if (after_last && route_better(v, e, best_v, best_e)) {
                    best_v = v;
                    best_e = e;
                }
            }
            for (int offset = 16; offset > 0; offset >>= 1) {
                const float ov = __shfl_xor_sync(0xffffffffu, best_v, offset);
                const int oe = __shfl_xor_sync(0xffffffffu, best_e, offset);
                if (route_better(ov, oe, best_v, best_e)) {
                    best_v = ov;
                    best_e = oe;
                }
            }
            // NaN logits never rank; with nothing left, fall back to id 0 so the id stays valid.
            if (best_e == INT_MAX) best_e = 0;
            const float w = expf(best_v - mx);
            picked += w;
            if (lane == 0) {
                ids[j] = best_e;
                weights[j] = w;
            }
            last_v = best_v;
            last_e = best_e;
        }
        __syncwarp();
        const float denom = renormalize ? picked : sum;
        for (int j = lane; j < top_k; j += 32) weights[j] = weights[j] / denom;
        __syncwarp();
    }
}

// Grid-stride over T * H elements; memory-bound (3 floats per element + the gate).
__global__ void moe_shared_gate_kernel(const float* __restrict__ gate_logits, const float* __restrict__ shared_out,
                                       float* __restrict__ y, int64_t num_tokens, int64_t hidden) {
    const int64_t n = num_tokens * hidden;
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const float gate = 1.0f / (1.0f + expf(-gate_logits[i / hidden]));
        y[i] = fmaf(gate, shared_out[i], y[i]);
    }
}

}  // namespace moe::kernels
