// Elementwise add (float4 when every pointer is 16-byte aligned, scalar tail) and a row-bias
// add. Memory-bound: 2 reads + 1 write per element.
#pragma once

#include <cstdint>

namespace moe::kernels {

// NOTE: no __restrict__: out may alias a or b (each element is read, then written, by one thread).
__global__ void add_f32x4_kernel(const float4* a, const float4* b, float4* out, int64_t n4) {
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n4;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const float4 x = a[i];
        const float4 y = b[i];
        out[i] = make_float4(x.x + y.x, x.y + y.y, x.z + y.z, x.w + y.w);
    }
}

__global__ void add_kernel(const float* a, const float* b, float* out, int64_t begin, int64_t n) {
    for (int64_t i = begin + blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        out[i] = a[i] + b[i];
    }
}

__global__ void add_bias_rows_kernel(float* __restrict__ y, int64_t y_stride, const float* __restrict__ bias,
                                     int64_t rows, int64_t cols) {
    const int64_t n = rows * cols;
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t r = i / cols;
        const int64_t c = i - r * cols;
        y[r * y_stride + c] += bias[c];
    }
}

}  // namespace moe::kernels
