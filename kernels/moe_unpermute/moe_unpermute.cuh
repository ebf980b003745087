// One CTA per token (grid-stride), threads over hidden: top_k gathered rows, one write. The slot
// loop is sequential per element, so the sum order is fixed (deterministic). Memory-bound:
// (top_k + 1 (+1 when accumulating)) * H floats per token.
#pragma once

#include <cstdint>

#include "kernels/common/device_utils.cuh"

namespace moe::kernels {

__global__ void moe_unpermute_kernel(const float* __restrict__ out_permuted, const int32_t* __restrict__ row_of,
                                     const float* __restrict__ topk_weights, float* __restrict__ y, int64_t num_tokens,
                                     int64_t top_k, int64_t hidden, int64_t num_rows, bool accumulate,
                                     KernelError* err) {
    for (int64_t t = blockIdx.x; t < num_tokens; t += gridDim.x) {
        if (threadIdx.x == 0) {
            for (int64_t j = 0; j < top_k; ++j) {
                const int64_t row = row_of[t * top_k + j];
                if (row < 0 || row >= num_rows) report_bad_row(err, t * top_k + j);
            }
        }
        for (int64_t h = threadIdx.x; h < hidden; h += blockDim.x) {
            float acc = accumulate ? y[t * hidden + h] : 0.0f;
            for (int64_t j = 0; j < top_k; ++j) {
                const int64_t row = row_of[t * top_k + j];
                if (row < 0 || row >= num_rows) continue;
                acc = fmaf(topk_weights[t * top_k + j], out_permuted[row * hidden + h], acc);
            }
            y[t * hidden + h] = acc;
        }
    }
}

}  // namespace moe::kernels
