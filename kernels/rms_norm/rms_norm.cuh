// RMSNorm: one block per row (grid-stride over rows). Pass 1 sums squares per thread, then warp
// shuffles and one shared-memory step reduce over the block; pass 2 rescales. The row is read
// twice (the second read hits L1/L2 for the row sizes of LLMs, <= 16K floats).
#pragma once

#include <cstdint>

#include "kernels/common/device_utils.cuh"

namespace moe::kernels {

// blockDim.x: a multiple of 32, at most 1024.
// NOTE: `x` and `out` are deliberately not __restrict__: in-place use (out == x) is allowed. Each
// element is read and then written by the same thread, after the block-wide reduction.
__global__ void rms_norm_kernel(const float* x, int64_t x_stride, const float* __restrict__ weight, float* out,
                                int64_t out_stride, int64_t rows, int64_t dim, float eps) {
    __shared__ float scratch[32];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* xr = x + r * x_stride;
        float* outr = out + r * out_stride;
        float sum_sq = 0.0f;
        for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
            const float v = xr[i];
            sum_sq = fmaf(v, v, sum_sq);
        }
        const float total = block_sum(sum_sq, scratch);
        const float inv_rms = 1.0f / sqrtf(total / static_cast<float>(dim) + eps);
        for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) outr[i] = xr[i] * inv_rms * weight[i];
    }
}

}  // namespace moe::kernels
