// MXFP4 expert GEMM launcher (#24): y[m, n] = x[m, k] * w[n, k]^T with w in MXFP4 as gpt-oss
// checkpoints store it (moe/quant.h): values u8 [n, k / 32, 16] (two e2m1 per byte, low nibble
// first), scales u8 [n, k / 32] (e8m0). Compiled for sm_80 / sm_90; not executed on this project's
// machines (no GPU).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/common/kernel_types.h"

namespace moe::kernels {

struct Mxfp4GemmParams {
    const void* x = nullptr;  // [m, k], row stride ldx elements, f32 or bf16 (x_type)
    ElemType x_type = ElemType::kF32;
    int64_t ldx = 0;
    const uint8_t* values = nullptr;  // device, [n, k / 32, 16]
    const uint8_t* scales = nullptr;  // device, [n, k / 32]; every weight finite (checked at load)
    float* y = nullptr;               // [m, n], row stride ldy
    int64_t ldy = 0;
    int64_t m = 0, n = 0, k = 0;  // k a multiple of 32
    bool accumulate = false;      // y += instead of y =
};

// Tiles of the kernel (mxfp4_gemm.cuh): rows x columns per thread block.
inline constexpr int kMxfp4TileRows = 32;
inline constexpr int kMxfp4TileCols = 64;

// cudaErrorInvalidValue when k is not a multiple of 32 or the row tiles exceed the grid's y limit
// (65535 tiles of 32 rows). Asynchronous on `stream`.
cudaError_t launch_mxfp4_gemm(const Mxfp4GemmParams& p, cudaStream_t stream);

}  // namespace moe::kernels
