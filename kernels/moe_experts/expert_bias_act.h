// Launchers of kernels/moe_experts/expert_bias_act.cuh (gpt-oss's biased experts with the clamped
// SwiGLU). Asynchronous on `stream`.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/common/kernel_types.h"

namespace moe::kernels {

// out = act(gate + gate_bias, up + up_bias) over [rows, cols] contiguous f32, written as f32 or
// bf16; null biases are zero; `out` may alias `gate` for f32 output.
cudaError_t launch_expert_bias_act(const float* gate, const float* up, const float* gate_bias, const float* up_bias,
                                   void* out, ElemType out_type, int64_t rows, int64_t cols, bool clamped, float alpha,
                                   float limit, cudaStream_t stream);

// y[r, :cols] += bias over `rows` rows of stride ldy.
cudaError_t launch_add_bias_rows(float* y, const float* bias, int64_t rows, int64_t cols, int64_t ldy,
                                 cudaStream_t stream);

}  // namespace moe::kernels
