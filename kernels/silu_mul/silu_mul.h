// SwiGLU activation launcher: out = silu(gate) * up, silu(v) = v / (1 + exp(-v)).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace moe::kernels {

// gate, up: [rows, cols] f32 with row strides (elements); out: [rows, cols] contiguous, may alias
// gate exactly. Asynchronous on `stream`.
cudaError_t launch_silu_mul(const float* gate, int64_t gate_stride, const float* up, int64_t up_stride, float* out,
                            int64_t rows, int64_t cols, cudaStream_t stream);

}  // namespace moe::kernels
