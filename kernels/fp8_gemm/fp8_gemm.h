// FP8 e4m3 block-scaled GEMM launcher (#20; the format: include/moe/quant.h):
//   y[m, n] (+)= x[m, k] * w[n, k]^T,  w[c, j] = e4m3(values[c * k + j]) * scales[c / block_n][j / block_k]
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace moe::kernels {

// x: f32 [m, k] with row stride ldx; values: e4m3 bytes [n, k] contiguous; scales: f32
// [ceil(n / block_n), ceil(k / block_k)] contiguous; y: f32 [m, n] with row stride ldy.
// Accumulates into y when `accumulate`. Any block size >= 1 and any m, n, k (partial tiles and
// blocks). Asynchronous on `stream`; cudaErrorInvalidValue for sizes past the grid's limits.
cudaError_t launch_fp8_block_gemm(const float* x, int64_t ldx, const uint8_t* values, const float* scales, int64_t m,
                                  int64_t n, int64_t k, int64_t block_n, int64_t block_k, float* y, int64_t ldy,
                                  bool accumulate, cudaStream_t stream);

}  // namespace moe::kernels
