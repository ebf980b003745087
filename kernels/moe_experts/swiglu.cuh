// Grid-stride elementwise SwiGLU; memory-bound: 8 bytes read, 4 (f32) or 2 (bf16) written per
// element. `out` may alias `gate` for f32 output (same element, same thread).
#pragma once

#include <cstdint>

#include "kernels/common/device_utils.cuh"

namespace moe::kernels {

template <typename OutT>
__global__ void swiglu_kernel(const float* gate, const float* __restrict__ up, OutT* out, int64_t n) {
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const float g = gate[i];
        store_from_f32(out, i, g / (1.0f + expf(-g)) * up[i]);
    }
}

}  // namespace moe::kernels
