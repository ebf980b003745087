// Elementwise adds: out = a + b, and the GEMM bias epilogue y[m, :] += bias.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace moe::kernels {

// a, b, out: `n` contiguous f32; out may alias a or b exactly. Asynchronous on `stream`.
cudaError_t launch_add(const float* a, const float* b, float* out, int64_t n, cudaStream_t stream);

// y: [rows, cols] f32 with row stride y_stride; bias: [cols]. y[r, c] += bias[c].
cudaError_t launch_add_bias_rows(float* y, int64_t y_stride, const float* bias, int64_t rows, int64_t cols,
                                 cudaStream_t stream);

}  // namespace moe::kernels
