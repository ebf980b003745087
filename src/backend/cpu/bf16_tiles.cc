#include "backend/cpu/bf16_tiles.h"

#include <algorithm>

#include "backend/cpu/avx512_math.h"
#include "backend/cpu/cpu_features.h"

namespace moe::cpu {
namespace {

// M rows of x against C weight rows (wrows; entries past `cols` repeat the last valid row and
// their sums are dropped). y: M rows of stride ldy, `cols` columns written.
template <int M, int C>
MOE_BF16_TARGET void tile(const uint16_t* x, int64_t ldx, const uint16_t* const* wrows, int64_t k, float* y,
                          int64_t ldy, int64_t cols, bool accumulate) {
    static_assert(C % 4 == 0);
    const int64_t k_full = k / 32 * 32;
    __m512 acc[M][C];
    for (int m = 0; m < M; ++m)
        for (int j = 0; j < C; ++j) acc[m][j] = _mm512_setzero_ps();
    for (int64_t kk = 0; kk < k_full; kk += 32) {
        __m512i wv[C];
        for (int j = 0; j < C; ++j) wv[j] = _mm512_loadu_si512(wrows[j] + kk);
        for (int m = 0; m < M; ++m) {
            const __m512bh xv = (__m512bh)_mm512_loadu_si512(x + m * ldx + kk);
            for (int j = 0; j < C; ++j) acc[m][j] = _mm512_dpbf16_ps(acc[m][j], xv, (__m512bh)wv[j]);
        }
    }
    if (k_full < k) {
        const __mmask32 tail = static_cast<__mmask32>((1u << (k - k_full)) - 1u);
        __m512i wv[C];
        for (int j = 0; j < C; ++j) wv[j] = _mm512_maskz_loadu_epi16(tail, wrows[j] + k_full);
        for (int m = 0; m < M; ++m) {
            // x is zero padded to a multiple of 32, so its full load is in bounds and adds zeros.
            const __m512bh xv = (__m512bh)_mm512_loadu_si512(x + m * ldx + k_full);
            for (int j = 0; j < C; ++j) acc[m][j] = _mm512_dpbf16_ps(acc[m][j], xv, (__m512bh)wv[j]);
        }
    }
    for (int m = 0; m < M; ++m) {
        float* yr = y + m * ldy;
        for (int j = 0; j < C; j += 4) {
            if (j >= cols) break;
            alignas(16) float s[4];
            _mm_store_ps(s, hsum4(acc[m][j], acc[m][j + 1], acc[m][j + 2], acc[m][j + 3]));
            const int64_t n = std::min<int64_t>(4, cols - j);
            for (int64_t i = 0; i < n; ++i) yr[j + i] = accumulate ? yr[j + i] + s[i] : s[i];
        }
    }
}

// One weight row against M rows of x: the row's M accumulators (the same per-lane sequence of
// VDPBF16PS as in tile(), so the sums after hsum4 are bitwise the same).
template <int M>
MOE_BF16_TARGET inline void row_acc(const uint16_t* x, int64_t ldx, const uint16_t* w, int64_t k, __m512* acc) {
    const int64_t k_full = k / 32 * 32;
    for (int m = 0; m < M; ++m) acc[m] = _mm512_setzero_ps();
    for (int64_t kk = 0; kk < k_full; kk += 32) {
        const __m512bh wv = (__m512bh)_mm512_loadu_si512(w + kk);
        for (int m = 0; m < M; ++m)
            acc[m] = _mm512_dpbf16_ps(acc[m], (__m512bh)_mm512_loadu_si512(x + m * ldx + kk), wv);
    }
    if (k_full < k) {
        const __mmask32 tail = static_cast<__mmask32>((1u << (k - k_full)) - 1u);
        const __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(tail, w + k_full);
        for (int m = 0; m < M; ++m)
            acc[m] = _mm512_dpbf16_ps(acc[m], (__m512bh)_mm512_loadu_si512(x + m * ldx + k_full), wv);
    }
}

// Decode rows (M <= 4): weight rows one after another, i.e. the matrix as one sequential stream
// per thread (rows are adjacent in memory), which the hardware prefetchers follow better than
// 8 interleaved row streams (tile<1, 8>): groups of 4 rows, then the same shuffle-tree sums.
template <int M>
MOE_BF16_TARGET void tile_seq(const uint16_t* x, int64_t ldx, const uint16_t* const* wrows, int64_t k, float* y,
                              int64_t ldy, int64_t cols, bool accumulate) {
    for (int64_t j = 0; j < cols; j += 4) {
        __m512 acc[4][M];
        for (int i = 0; i < 4; ++i) row_acc<M>(x, ldx, wrows[std::min<int64_t>(j + i, cols - 1)], k, acc[i]);
        for (int m = 0; m < M; ++m) {
            alignas(16) float s[4];
            _mm_store_ps(s, hsum4(acc[0][m], acc[1][m], acc[2][m], acc[3][m]));
            float* yr = y + m * ldy + j;
            const int64_t n = std::min<int64_t>(4, cols - j);
            for (int64_t i = 0; i < n; ++i) yr[i] = accumulate ? yr[i] + s[i] : s[i];
        }
    }
}

MOE_BF16_TARGET void rows_to_bf16_avx512(const float* x, int64_t ldx, int64_t rows, int64_t k, uint16_t* out,
                                         int64_t ldo) {
    const int64_t kp = bf16_padded_k(k);
    for (int64_t r = 0; r < rows; ++r) {
        const float* xr = x + r * ldx;
        uint16_t* o = out + r * ldo;
        for (int64_t i = 0; i < kp; i += 16) {
            const __mmask16 mask = lanes16(k - i);
            const __m512 v = _mm512_maskz_loadu_ps(mask, xr + i);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + i), (__m256i)_mm512_cvtneps_pbh(v));
        }
    }
}

}  // namespace

MOE_BF16_TARGET void silu_mul_to_bf16(const float* g, const float* u, int64_t n, uint16_t* out) {
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 mask = lanes16(n - i);
        const __m512 gv = _mm512_maskz_loadu_ps(mask, g + i);
        const __m512 uv = _mm512_maskz_loadu_ps(mask, u + i);
        const __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), gv));
        const __m512 s = _mm512_mul_ps(_mm512_div_ps(gv, _mm512_add_ps(_mm512_set1_ps(1.0f), e)), uv);
        _mm256_mask_storeu_epi16(out + i, mask, (__m256i)_mm512_cvtneps_pbh(s));
    }
}

bool bf16_tiles_available() {
    return cpu_features().avx512_bf16;
}

void f32_rows_to_bf16(const float* x, int64_t ldx, int64_t rows, int64_t k, uint16_t* out, int64_t ldo) {
    rows_to_bf16_avx512(x, ldx, rows, k, out, ldo);
}

// Up to this many rows, weight rows streamed one after another (tile_seq); above, 6 x 4 tiles.
constexpr int64_t kSmallRows = 8;
// Rows per tile above kSmallRows: 6 x 4 = 24 accumulators + 4 weight vectors + 1 x vector fit
// the 32 registers, 10 loads per 24 VDPBF16PS (4 x 4: 8 per 16).
constexpr int kBigTileRows = 6;

void bf16_dot_block(const uint16_t* x, int64_t ldx, int64_t rows, const uint16_t* w, int64_t k, int64_t n_begin,
                    int64_t n_end, float* y, int64_t ldy, bool accumulate) {
    constexpr int64_t G = kBf16ColGroup;
    static_assert(G == 8);
    if (rows > kBf16RowBlock) {
        for (int64_t r0 = 0; r0 < rows; r0 += kBf16RowBlock)
            bf16_dot_block(x + r0 * ldx, ldx, std::min(kBf16RowBlock, rows - r0), w, k, n_begin, n_end, y + r0 * ldy,
                           ldy, accumulate);
        return;
    }
    for (int64_t n = n_begin; n < n_end; n += G) {
        const int64_t cols = std::min<int64_t>(G, n_end - n);
        const uint16_t* wr[G];
        for (int64_t j = 0; j < G; ++j) wr[j] = w + (n + std::min<int64_t>(j, cols - 1)) * k;
        float* yc = y + (n - n_begin);
        if (rows <= kSmallRows) {
            // Decode-sized batches: the 8 weight rows one after another (one sequential stream,
            // tile_seq), against up to 4 rows of x at a time; a second group of x rows finds
            // the weights in L1/L2. Interleaving the 8 rows instead (tile<1, 8>) streamed 30-45%
            // slower in moe_engine_bench on Qwen3-30B-A3B-shaped layers.
            const int64_t first = std::min<int64_t>(rows, 4);
            with_rows<4>(first,
                         [&](auto m) { tile_seq<decltype(m)::value>(x, ldx, wr, k, yc, ldy, cols, accumulate); });
            with_rows<4>(rows - first, [&](auto m) {
                tile_seq<decltype(m)::value>(x + 4 * ldx, ldx, wr, k, yc + 4 * ldy, ldy, cols, accumulate);
            });
        } else {
            // Two halves of 4 weight rows, each held in L1 while all rows of x pass.
            for (int64_t h = 0; h < G && h < cols; h += 4) {
                const int64_t hc = std::min<int64_t>(4, cols - h);
                const uint16_t* const* wh = wr + h;
                float* yh = yc + h;
                int64_t r = 0;
                for (; r + kBigTileRows <= rows; r += kBigTileRows)
                    tile<kBigTileRows, 4>(x + r * ldx, ldx, wh, k, yh + r * ldy, ldy, hc, accumulate);
                with_rows<kBigTileRows - 1>(rows - r, [&](auto m) {
                    tile<decltype(m)::value, 4>(x + r * ldx, ldx, wh, k, yh + r * ldy, ldy, hc, accumulate);
                });
            }
        }
    }
}

void split_by_cost(const int64_t* costs, int64_t num_items, int parts, int64_t* bounds) {
    int64_t total = 0;
    for (int64_t i = 0; i < num_items; ++i) total += std::max<int64_t>(costs[i], 0);
    bounds[0] = 0;
    int p = 0;  // the part the next item goes to
    int64_t before = 0;
    for (int64_t i = 0; i < num_items; ++i) {
        const int64_t c = std::max<int64_t>(costs[i], 0);
        // Item i goes to the part its midpoint falls in.
        const int64_t part =
            total > 0 ? std::min<int64_t>(parts - 1, (2 * before + c) * parts / (2 * total)) : i * parts / num_items;
        while (p < part) bounds[++p] = i;
        before += c;
    }
    while (p < parts) bounds[++p] = num_items;
}

}  // namespace moe::cpu
