// FP8 e4m3 block-scaled GEMM: one thread block per [kFp8TileM rows x kFp8TileN columns] tile of
// y. Per step of kFp8TileK along k, the block stages the weight tile in shared memory already
// dequantized (e4m3 -> f32 times its block's scale, so any block size works, partial blocks
// included) and the x tile beside it; each thread then accumulates 2 rows x 4 columns in f32.
// Weights are read from global memory once per row tile: 1 byte per weight.
//
//   shared  w_s[kFp8TileK][kFp8TileN + 1]  (k-major: a thread's 4 columns are adjacent)
//           x_s[kFp8TileK][kFp8TileM + 1]
//   thread  t: columns 4 * (t % 16) + [0, 4), rows 2 * (t / 16) + [0, 2)
#pragma once

#include <cstdint>

namespace moe::kernels {

inline constexpr int kFp8TileN = 64;
inline constexpr int kFp8TileM = 32;
inline constexpr int kFp8TileK = 32;
inline constexpr int kFp8Threads = 256;

// e4m3 (bias 7, no infinities, 0x7f / 0xff NaN) to f32, exactly.
__device__ __forceinline__ float e4m3_to_f32(uint32_t v) {
    const uint32_t e = (v >> 3) & 0xfu, m = v & 0x7u;
    float mag = e == 0 ? static_cast<float>(m) * 0x1p-9f : __uint_as_float(((e + 120u) << 23) | (m << 20));
    if ((v & 0x7fu) == 0x7fu) mag = __uint_as_float(0x7fc00000u);
    return (v & 0x80u) ? -mag : mag;
}

__global__ void __launch_bounds__(kFp8Threads)
    fp8_block_gemm_kernel(const float* __restrict__ x, int64_t ldx, const uint8_t* __restrict__ values,
                          const float* __restrict__ scales, int64_t m, int64_t n, int64_t k, int64_t block_n,
                          int64_t block_k, float* __restrict__ y, int64_t ldy, bool accumulate) {
    __shared__ float w_s[kFp8TileK][kFp8TileN + 1];
    __shared__ float x_s[kFp8TileK][kFp8TileM + 1];
    const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kFp8TileN;
    const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kFp8TileM;
    const int64_t scale_cols = (k + block_k - 1) / block_k;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    float acc[2][4] = {};
    for (int64_t k0 = 0; k0 < k; k0 += kFp8TileK) {
        // Consecutive threads take consecutive k of one weight row: 32 contiguous bytes per row.
        for (int i = threadIdx.x; i < kFp8TileN * kFp8TileK; i += kFp8Threads) {
            const int c = i / kFp8TileK, kk = i % kFp8TileK;
            const int64_t gc = n0 + c, gk = k0 + kk;
            float v = 0.0f;
            if (gc < n && gk < k)
                v = e4m3_to_f32(values[gc * k + gk]) * scales[(gc / block_n) * scale_cols + gk / block_k];
            w_s[kk][c] = v;
        }
        for (int i = threadIdx.x; i < kFp8TileM * kFp8TileK; i += kFp8Threads) {
            const int r = i / kFp8TileK, kk = i % kFp8TileK;
            const int64_t gr = m0 + r, gk = k0 + kk;
            x_s[kk][r] = gr < m && gk < k ? x[gr * ldx + gk] : 0.0f;
        }
        __syncthreads();
#pragma unroll 8
        for (int kk = 0; kk < kFp8TileK; ++kk) {
            float xv[2], wv[4];
            for (int a = 0; a < 2; ++a) xv[a] = x_s[kk][2 * ty + a];
            for (int b = 0; b < 4; ++b) wv[b] = w_s[kk][4 * tx + b];
            for (int a = 0; a < 2; ++a)
                for (int b = 0; b < 4; ++b) acc[a][b] = fmaf(xv[a], wv[b], acc[a][b]);
        }
        __syncthreads();
    }
    for (int a = 0; a < 2; ++a) {
        const int64_t r = m0 + 2 * ty + a;
        if (r >= m) continue;
        for (int b = 0; b < 4; ++b) {
            const int64_t c = n0 + 4 * tx + b;
            if (c >= n) continue;
            float* out = y + r * ldy + c;
            *out = accumulate ? *out + acc[a][b] : acc[a][b];
        }
    }
}

}  // namespace moe::kernels
