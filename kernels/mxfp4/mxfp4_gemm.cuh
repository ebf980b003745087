// The MXFP4 GEMM kernel: one thread block per 32 rows x 64 columns of y, over k one MXFP4 block
// (32 values) at a time:
//   1. the 64 columns' 16-byte blocks (one 32-bit word per thread) and scales are decoded in
//      shared memory to f32: e2m1 from a 16-entry table, times 2^(s - 127) (exact);
//   2. the 32 rows' 32 x values go to shared memory as f32;
//   3. each thread accumulates 2 rows x 4 columns in f32 registers.
// The weights cross the memory bus at 4.25 bits each and are expanded only in shared memory.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "kernels/mxfp4/mxfp4_gemm.h"

namespace moe::kernels {

__device__ __forceinline__ float e2m1_value(uint32_t code) {
    // sign, 2 exponent bits, 1 mantissa bit: 0, 0.5, 1, 1.5, 2, 3, 4, 6
    const uint32_t mag = code & 7u;
    const float v = mag < 2u ? 0.5f * static_cast<float>(mag)
                             : ldexpf(1.0f + 0.5f * static_cast<float>(mag & 1u), static_cast<int>(mag >> 1) - 1);
    return (code & 8u) ? -v : v;
}

template <typename XT>
__device__ __forceinline__ float x_value(const XT* x, int64_t i);
template <>
__device__ __forceinline__ float x_value<float>(const float* x, int64_t i) {
    return x[i];
}
template <>
__device__ __forceinline__ float x_value<__nv_bfloat16>(const __nv_bfloat16* x, int64_t i) {
    return __bfloat162float(x[i]);
}

template <typename XT>
__global__ void __launch_bounds__(256)
    mxfp4_gemm_kernel(const XT* __restrict__ x, int64_t ldx, const uint8_t* __restrict__ values,
                      const uint8_t* __restrict__ scales, float* __restrict__ y, int64_t ldy, int64_t m, int64_t n,
                      int64_t k, bool accumulate) {
    constexpr int BM = kMxfp4TileRows, BN = kMxfp4TileCols;
    __shared__ float w_s[BN][33];  // decoded weights, padded against bank conflicts
    __shared__ float x_s[BM][33];
    const int t = threadIdx.x;
    const int64_t row0 = static_cast<int64_t>(blockIdx.y) * BM;
    const int64_t col0 = static_cast<int64_t>(blockIdx.x) * BN;
    const int64_t kb = k / 32;
    const int tx = t % 16, ty = t / 16;  // outputs: rows ty, ty + 16; columns tx + 16 j
    float acc[2][4] = {};
    for (int64_t b = 0; b < kb; ++b) {
        {
            // Weights: thread t decodes bytes 4q .. 4q + 3 of column t / 4's block (k 8q .. 8q + 7).
            const int c = t / 4, q = t % 4;
            const int64_t col = col0 + c;
            if (col < n) {
                const uint8_t* blk = values + (col * kb + b) * 16 + 4 * q;
                const float scale = ldexpf(1.0f, static_cast<int>(scales[col * kb + b]) - 127);
                for (int i = 0; i < 4; ++i) {
                    const uint32_t byte = blk[i];
                    w_s[c][8 * q + 2 * i] = e2m1_value(byte & 15u) * scale;
                    w_s[c][8 * q + 2 * i + 1] = e2m1_value(byte >> 4) * scale;
                }
            } else {
                for (int i = 0; i < 8; ++i) w_s[c][8 * q + i] = 0.0f;
            }
        }
        for (int i = t; i < BM * 32; i += 256) {
            const int r = i / 32, kk = i % 32;
            x_s[r][kk] = row0 + r < m ? x_value<XT>(x, (row0 + r) * ldx + b * 32 + kk) : 0.0f;
        }
        __syncthreads();
#pragma unroll 8
        for (int kk = 0; kk < 32; ++kk) {
            const float x0 = x_s[ty][kk], x1 = x_s[ty + 16][kk];
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const float w = w_s[tx + 16 * j][kk];
                acc[0][j] = fmaf(x0, w, acc[0][j]);
                acc[1][j] = fmaf(x1, w, acc[1][j]);
            }
        }
        __syncthreads();
    }
    for (int i = 0; i < 2; ++i) {
        const int64_t r = row0 + ty + 16 * i;
        if (r >= m) continue;
        for (int j = 0; j < 4; ++j) {
            const int64_t c = col0 + tx + 16 * j;
            if (c < n) y[r * ldy + c] = accumulate ? y[r * ldy + c] + acc[i][j] : acc[i][j];
        }
    }
}

}  // namespace moe::kernels
