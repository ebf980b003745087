// f32 -> bf16 conversion launcher (activations fed to bf16 cuBLAS GEMMs).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace moe::kernels {

// x: [rows, cols] f32 with row stride x_stride; y: [rows, cols] bf16 contiguous (passed as raw
// 16-bit storage so that host callers need no CUDA bf16 header). Round to nearest even.
cudaError_t launch_cast_f32_to_bf16(const float* x, int64_t x_stride, uint16_t* y, int64_t rows, int64_t cols,
                                    cudaStream_t stream);

}  // namespace moe::kernels
