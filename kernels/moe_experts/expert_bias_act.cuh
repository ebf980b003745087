// Biased experts (gpt-oss): the activation between gate/up and down with the biases added, and
// the down projection's bias. Grid-stride elementwise, memory-bound.
#pragma once

#include <cstdint>

#include "kernels/common/device_utils.cuh"

namespace moe::kernels {

// out[r, c] = act(gate[r, c] + gate_bias[c], up[r, c] + up_bias[c]) over [rows, cols] contiguous;
// a null bias is zero. clamped: MoeExpertsArgs' kClampedSwiGLU, else silu(g) * u.
template <typename OutT>
__global__ void expert_bias_act_kernel(const float* gate, const float* __restrict__ up,
                                       const float* __restrict__ gate_bias, const float* __restrict__ up_bias,
                                       OutT* out, int64_t rows, int64_t cols, bool clamped, float alpha, float limit) {
    const int64_t n = rows * cols;
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t c = i % cols;
        float g = gate[i] + (gate_bias != nullptr ? gate_bias[c] : 0.0f);
        float u = up[i] + (up_bias != nullptr ? up_bias[c] : 0.0f);
        float v;
        if (clamped) {
            g = fminf(g, limit);
            u = fminf(fmaxf(u, -limit), limit);
            v = (u + 1.0f) * (g / (1.0f + expf(-alpha * g)));
        } else {
            v = g / (1.0f + expf(-g)) * u;
        }
        store_from_f32(out, i, v);
    }
}

// y[r, c] += bias[c] over [rows, cols] with row stride ldy.
__global__ void add_bias_rows_kernel(float* y, const float* __restrict__ bias, int64_t rows, int64_t cols,
                                     int64_t ldy) {
    const int64_t n = rows * cols;
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t r = i / cols, c = i % cols;
        y[r * ldy + c] += bias[c];
    }
}

}  // namespace moe::kernels
