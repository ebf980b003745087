// Device helpers shared by the kernels: reductions, bf16 loads, bad-index reporting.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "kernels/common/kernel_types.h"

namespace moe::kernels {

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

// Sum over the whole block; every thread gets the result. blockDim.x must be a multiple of 32
// (at most 1024). `scratch` holds 32 floats of shared memory; it is reusable after the call.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
    const int num_warps = blockDim.x / 32;
    v = warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float total = lane < num_warps ? scratch[lane] : 0.0f;
    total = warp_sum(total);
    __syncthreads();  // scratch may be reused by the caller right after
    return total;
}

__device__ __forceinline__ float load_as_f32(const float* p, int64_t i) {
    return p[i];
}
__device__ __forceinline__ float load_as_f32(const __nv_bfloat16* p, int64_t i) {
    return __bfloat162float(p[i]);
}

__device__ __forceinline__ void store_from_f32(float* p, int64_t i, float v) {
    p[i] = v;
}
__device__ __forceinline__ void store_from_f32(__nv_bfloat16* p, int64_t i, float v) {
    p[i] = __float2bfloat16_rn(v);
}

// Records that row `row` had a bad index (count, and the lowest such row via ~row max).
__device__ __forceinline__ void report_bad_row(KernelError* err, int64_t row) {
    if (err == nullptr) return;
    atomicAdd(&err->num_bad, 1u);
    atomicMax(&err->not_first_bad, ~static_cast<uint32_t>(row));
}

}  // namespace moe::kernels
