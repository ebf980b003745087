#include "backend/cpu/bf16_panels.h"

#include <algorithm>
#include <cstring>

#include "backend/cpu/avx512_math.h"

namespace moe::cpu {
namespace {

constexpr int64_t kPairStride = 2 * kBf16PanelCols;  // elements per k pair in a panel
// Rows per tile: 6 x 4 = 24 accumulators + 4 weight vectors + 1 broadcast fit 32 registers.
constexpr int kTileRows = 6;

// M rows of x against one panel (64 columns, `cols` of them kept). k2: k pairs.
// PF lines (0 or 2) of the next panel toward L2 per k pair, from line pf_first of each of its
// 256-byte k pair rows (pf: the next panel): see bf16_panel_block.
template <int M, int PF = 0>
MOE_BF16_TARGET void panel_tile(const uint16_t* x, int64_t ldx, const uint16_t* wp, int64_t k2, float* y, int64_t ldy,
                                int64_t cols, bool accumulate, const uint16_t* pf = nullptr, int pf_first = 0) {
    __m512 acc[M][4];
    for (int m = 0; m < M; ++m)
        for (int j = 0; j < 4; ++j) acc[m][j] = _mm512_setzero_ps();
    for (int64_t kp = 0; kp < k2; ++kp) {
        const uint16_t* w = wp + kp * kPairStride;
        if constexpr (PF > 0) {
            const char* q = reinterpret_cast<const char*>(pf + kp * kPairStride) + 64 * pf_first;
            for (int l = 0; l < PF; ++l) _mm_prefetch(q + 64 * l, _MM_HINT_T2);
        }
        const __m512bh w0 = (__m512bh)_mm512_loadu_si512(w);
        const __m512bh w1 = (__m512bh)_mm512_loadu_si512(w + 32);
        const __m512bh w2 = (__m512bh)_mm512_loadu_si512(w + 64);
        const __m512bh w3 = (__m512bh)_mm512_loadu_si512(w + 96);
        for (int m = 0; m < M; ++m) {
            int32_t pair;
            std::memcpy(&pair, x + m * ldx + 2 * kp, sizeof(pair));
            const __m512bh xb = (__m512bh)_mm512_set1_epi32(pair);
            acc[m][0] = _mm512_dpbf16_ps(acc[m][0], xb, w0);
            acc[m][1] = _mm512_dpbf16_ps(acc[m][1], xb, w1);
            acc[m][2] = _mm512_dpbf16_ps(acc[m][2], xb, w2);
            acc[m][3] = _mm512_dpbf16_ps(acc[m][3], xb, w3);
        }
    }
    for (int m = 0; m < M; ++m) {
        float* yr = y + m * ldy;
        for (int j = 0; j < 4; ++j) {
            const __mmask16 mask = lanes16(cols - 16 * j);
            if (mask == 0) break;
            __m512 v = acc[m][j];
            if (accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, yr + 16 * j));
            _mm512_mask_storeu_ps(yr + 16 * j, mask, v);
        }
    }
}

}  // namespace

void pack_bf16_panels(const uint16_t* w, int64_t n, int64_t k, uint16_t* out) {
    const int64_t k2 = (k + 1) / 2, full_pairs = k / 2;
    const int64_t panels = (n + kBf16PanelCols - 1) / kBf16PanelCols;
    for (int64_t p = 0; p < panels; ++p) {
        uint16_t* dst = out + p * k2 * kPairStride;
        const int64_t c1 = std::min(kBf16PanelCols, n - p * kBf16PanelCols);
        const uint16_t* src = w + p * kBf16PanelCols * k;
        // k pairs outer, columns inner: the panel is written front to back, and the 64 source
        // rows are read 4 bytes at a time (their current lines stay in L1).
        for (int64_t kp = 0; kp < k2; ++kp) {
            uint16_t* d = dst + kp * kPairStride;
            for (int64_t c = 0; c < c1; ++c) {
                const uint16_t* s = src + c * k + 2 * kp;
                if (kp < full_pairs) {
                    std::memcpy(d + 2 * c, s, 2 * sizeof(uint16_t));
                } else {
                    d[2 * c] = s[0];  // odd k: the last value, paired with a zero
                    d[2 * c + 1] = 0;
                }
            }
            if (c1 < kBf16PanelCols)
                std::memset(d + 2 * c1, 0, static_cast<size_t>(kBf16PanelCols - c1) * 2 * sizeof(uint16_t));
        }
    }
}

void bf16_panel_block(const uint16_t* x, int64_t ldx, int64_t rows, const uint16_t* wp, int64_t n, int64_t k,
                      int64_t n_begin, int64_t n_end, float* y, int64_t ldy, bool accumulate) {
    const int64_t k2 = (k + 1) / 2;
    n_end = std::min(n_end, n);
    for (int64_t c0 = n_begin; c0 < n_end; c0 += kBf16PanelCols) {
        const uint16_t* panel = wp + (c0 / kBf16PanelCols) * k2 * kPairStride;
        const int64_t cols = std::min(kBf16PanelCols, n_end - c0);
        float* yc = y + (c0 - n_begin);
        // Rows in tiles of 6: the panel (k2 * 256 bytes) is read from DRAM by the first tile and
        // from L2 by the rest. With 13 rows or more, the second and third tiles, which compute
        // with the memory idle, prefetch half of the next panel of the range each toward L2, so
        // that its first tile computes instead of waiting for DRAM. gemm_decode_bench --packed 1,
        // 1536 x 1024, 16 rows: 292-310 -> 345-349 GFLOP/s. With one later tile (7-12 rows) the
        // prefetches outran the arithmetic: 8 rows went 249 -> 180, 12 rows no change; so none.
        // The tiles' arithmetic is unchanged.
        static_assert(kBf16PanelPrefetchMinRows == 2 * kTileRows + 1, "two later tiles");
        const uint16_t* next = c0 + kBf16PanelCols < n_end ? panel + k2 * kPairStride : nullptr;
        int64_t r = 0;
        auto tile = [&](auto m) {
            constexpr int M = decltype(m)::value;
            const int64_t pass = r / kTileRows;  // 0: the first tile
            if (next == nullptr || rows < kBf16PanelPrefetchMinRows || pass == 0 || pass > 2) {
                panel_tile<M>(x + r * ldx, ldx, panel, k2, yc + r * ldy, ldy, cols, accumulate);
            } else {
                panel_tile<M, 2>(x + r * ldx, ldx, panel, k2, yc + r * ldy, ldy, cols, accumulate, next,
                                 static_cast<int>(2 * (pass - 1)));
            }
        };
        for (; r + kTileRows <= rows; r += kTileRows) tile(std::integral_constant<int, kTileRows>{});
        with_rows<kTileRows - 1>(rows - r, tile);
    }
}

}  // namespace moe::cpu
