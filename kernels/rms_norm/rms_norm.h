// RMSNorm launcher: out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace moe::kernels {

// x: [rows, dim] f32 with row stride x_stride (elements); weight: [dim] f32; out: [rows, dim] with
// row stride out_stride, may alias x exactly (in place). Asynchronous on `stream`.
cudaError_t launch_rms_norm(const float* x, int64_t x_stride, const float* weight, float* out, int64_t out_stride,
                            int64_t rows, int64_t dim, float eps, cudaStream_t stream);

}  // namespace moe::kernels
