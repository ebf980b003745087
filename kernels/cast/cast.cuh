// Strided f32 -> contiguous bf16, grid-stride over elements. Memory-bound: 4 bytes in, 2 out.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace moe::kernels {

__global__ void cast_f32_to_bf16_kernel(const float* __restrict__ x, int64_t x_stride, __nv_bfloat16* __restrict__ y,
                                        int64_t rows, int64_t cols) {
    const int64_t n = rows * cols;
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t r = i / cols;
        const int64_t c = i - r * cols;
        y[i] = __float2bfloat16_rn(x[r * x_stride + c]);
    }
}

}  // namespace moe::kernels
