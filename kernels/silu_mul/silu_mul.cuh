// Elementwise SwiGLU over a strided 2-D view: a grid-stride loop over the rows x cols elements.
// Memory-bound: 2 reads and 1 write of f32 per element.
#pragma once

#include <cstdint>

namespace moe::kernels {

__device__ __forceinline__ float silu(float v) {
    // For v -> -inf, expf(-v) overflows to inf and v / inf gives -0, the correct limit.
    return v / (1.0f + expf(-v));
}

// NOTE: `gate` and `out` are not __restrict__: out may alias gate (same element, same thread).
__global__ void silu_mul_kernel(const float* gate, int64_t gate_stride, const float* __restrict__ up, int64_t up_stride,
                                float* out, int64_t rows, int64_t cols) {
    const int64_t n = rows * cols;
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t r = i / cols;
        const int64_t c = i - r * cols;
        out[i] = silu(gate[r * gate_stride + c]) * up[r * up_stride + c];
    }
}

}  // namespace moe::kernels
