#include "backend/cpu/bf16_panels.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <mutex>
#include <vector>

#include "backend/cpu/avx512_math.h"
#include "core/thread_pool.h"
#include "moe/dtype.h"

namespace moe::cpu {
namespace {

constexpr int64_t kPairStride = 2 * kBf16PanelCols;  // elements per k pair in a panel
// Rows per tile: 6 x 4 = 24 accumulators + 4 weight vectors + 1 broadcast fit 32 registers.
constexpr int kTileRows = 6;

// k pair kp of the panel whose first column is src (columns c1 <= 64 of them, rows of k values)
// in the plain layout: out[2 * c + i] = src[c * k + 2 * kp + i], zero past the last column and,
// for an odd k, past the last value.
inline void gather_pair_row(const uint16_t* src, int64_t k, int64_t c1, int64_t kp, uint16_t* out) {
    const bool full = 2 * kp + 1 < k;
    for (int64_t c = 0; c < c1; ++c) {
        const uint16_t* s = src + c * k + 2 * kp;
        if (full) {
            std::memcpy(out + 2 * c, s, 2 * sizeof(uint16_t));
        } else {
            out[2 * c] = s[0];  // odd k: the last value, paired with a zero
            out[2 * c + 1] = 0;
        }
    }
    if (c1 < kBf16PanelCols)
        std::memset(out + 2 * c1, 0, static_cast<size_t>(kBf16PanelCols - c1) * 2 * sizeof(uint16_t));
}

// y[m][0, cols) (+)= acc[m].
template <int M>
MOE_BF16_TARGET __attribute__((always_inline)) inline void store_tile(const __m512 (&acc)[M][4], float* y, int64_t ldy,
                                                                      int64_t cols, bool accumulate) {
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

// M rows of x against one panel (64 columns, `cols` of them kept). k2: k pairs.
// PF lines (0, 1 or 2) toward L2 per k pair from pf + kp * pf_stride (bytes): the caller's next
// panel, see bf16_panel_block.
template <int M, int PF = 0>
MOE_BF16_TARGET void panel_tile(const uint16_t* x, int64_t ldx, const uint16_t* wp, int64_t k2, float* y, int64_t ldy,
                                int64_t cols, bool accumulate, const char* pf = nullptr, int64_t pf_stride = 0) {
    __m512 acc[M][4];
    for (int m = 0; m < M; ++m)
        for (int j = 0; j < 4; ++j) acc[m][j] = _mm512_setzero_ps();
    for (int64_t kp = 0; kp < k2; ++kp) {
        const uint16_t* w = wp + kp * kPairStride;
        if constexpr (PF > 0) {
            for (int l = 0; l < PF; ++l) _mm_prefetch(pf + kp * pf_stride + 64 * l, _MM_HINT_T2);
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
    store_tile<M>(acc, y, ldy, cols, accumulate);
}

// ---- 12-bit panels

constexpr int64_t kPair12Bytes = 192;  // one k pair row: 128 low bytes, 64 code bytes
constexpr int64_t kHeader12Bytes = 128;
constexpr uint8_t kEscapeCode = 15;

struct Header12 {
    int64_t n, k, exceptions;
    uint8_t pad[40];
    uint8_t table[64];  // the 16 entries, once per 128-bit lane (VPSHUFB looks up per lane)
};
static_assert(sizeof(Header12) <= kHeader12Bytes);

// A panel's exceptions are sorted by column group of 16 (slot / 32), then k pair, then slot: the
// order add_exceptions needs to reach each group's accumulators in turn.
struct Exception12 {
    int32_t kp;    // k pair
    uint8_t slot;  // value within the pair row: column * 2 + (k % 2)
    uint8_t pad;
    uint16_t value;  // the exact bf16
};
static_assert(sizeof(Exception12) == 8);

// The exceptions of a 12-bit panel [e, e_end) (sorted by column group of 16, then k pair) that
// the tile read as +0.0: the exact bf16 products (8 x 8 significant bits fit f32's 24) added to
// the tile's sums in that order, in registers (a fused multiply-add of a product that f32 holds
// exactly rounds as the add alone). The same terms in the same order whatever M, so a row's bits
// do not depend on its tile.
template <int M>
MOE_BF16_TARGET __attribute__((always_inline)) inline void add_exceptions(__m512 (&acc)[M][4], const uint16_t* x,
                                                                          int64_t ldx, const Exception12* e,
                                                                          const Exception12* e_end) {
    for (int j = 0; j < 4; ++j) {
        for (; e < e_end && e->slot / 32 == j; ++e) {
            const __mmask16 lane = static_cast<__mmask16>(1u << (e->slot / 2 % 16));
            const __m512 wv = _mm512_set1_ps(bf16_to_f32(e->value));
            const int64_t kk = 2 * static_cast<int64_t>(e->kp) + e->slot % 2;
            for (int m = 0; m < M; ++m)
                acc[m][j] = _mm512_mask3_fmadd_ps(_mm512_set1_ps(bf16_to_f32(x[m * ldx + kk])), wv, acc[m][j], lane);
        }
    }
}

// Byte position, within its 64-byte half of the low-byte plane (and within the code plane), of
// value e (0..127) of a pair row. Values are stored so that VPUNPCKLBW / VPUNPCKHBW of a half
// with its high bytes, which interleave per 128-bit lane, give values 0-31 and 32-63 of the half
// in order: byte 16 * (q / 8) + q % 8 holds value q, byte 16 * (q / 8) + 8 + q % 8 value 32 + q.
inline int byte_pos12(int e) {
    const int h = e % 64;
    const int q = h % 32;
    return 16 * (q / 8) + (h >= 32 ? 8 : 0) + q % 8;
}

const Header12& header12(const uint8_t* packed) {
    return *reinterpret_cast<const Header12*>(packed);
}
const uint8_t* panel12(const uint8_t* packed, int64_t p, int64_t k2) {
    return packed + kHeader12Bytes + p * k2 * kPair12Bytes;
}
const int32_t* exc_offsets12(const uint8_t* packed, int64_t n, int64_t k) {
    return reinterpret_cast<const int32_t*>(panel12(packed, bf16_panel_count(n), (k + 1) / 2));
}
int64_t exc_list_offset12(int64_t n, int64_t k) {
    const int64_t offsets_end = kHeader12Bytes + bf16_panel_count(n) * ((k + 1) / 2) * kPair12Bytes +
                                (bf16_panel_count(n) + 1) * static_cast<int64_t>(sizeof(int32_t));
    return (offsets_end + 7) / 8 * 8;
}
const Exception12* exceptions12(const uint8_t* packed, int64_t n, int64_t k) {
    return reinterpret_cast<const Exception12*>(packed + exc_list_offset12(n, k));
}

// One pair row of the 12-bit form back to the four weight vectors of the plain panel.
MOE_BF16_TARGET __attribute__((always_inline)) inline void decode_pair12(const uint8_t* b, __m512i table,
                                                                         __m512i (&w)[4]) {
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    const __m512i lo0 = _mm512_loadu_si512(b), lo1 = _mm512_loadu_si512(b + 64);
    const __m512i codes = _mm512_loadu_si512(b + 128);
    const __m512i hi0 = _mm512_shuffle_epi8(table, _mm512_and_si512(codes, low4));
    const __m512i hi1 = _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_srli_epi16(codes, 4), low4));
    w[0] = _mm512_unpacklo_epi8(lo0, hi0);
    w[1] = _mm512_unpackhi_epi8(lo0, hi0);
    w[2] = _mm512_unpacklo_epi8(lo1, hi1);
    w[3] = _mm512_unpackhi_epi8(lo1, hi1);
}

// panel_tile over one 12-bit panel, decoded as it goes, its exceptions [exc, exc_end) read as
// +0.0 and then added (add_exceptions). PF, pf, pf_stride: as panel_tile's.
template <int M, int PF = 0>
MOE_BF16_TARGET void panel12_tile(const uint16_t* x, int64_t ldx, const uint8_t* wp, int64_t k2, const uint8_t* table64,
                                  float* y, int64_t ldy, int64_t cols, bool accumulate, const Exception12* exc,
                                  const Exception12* exc_end, const char* pf = nullptr, int64_t pf_stride = 0) {
    __m512 acc[M][4];
    for (int m = 0; m < M; ++m)
        for (int j = 0; j < 4; ++j) acc[m][j] = _mm512_setzero_ps();
    const __m512i table = _mm512_loadu_si512(table64);
    for (int64_t kp = 0; kp < k2; ++kp) {
        __m512i w[4];
        if constexpr (PF > 0) {
            for (int l = 0; l < PF; ++l) _mm_prefetch(pf + kp * pf_stride + 64 * l, _MM_HINT_T2);
        }
        decode_pair12(wp + kp * kPair12Bytes, table, w);
        for (int m = 0; m < M; ++m) {
            int32_t pair;
            std::memcpy(&pair, x + m * ldx + 2 * kp, sizeof(pair));
            const __m512bh xb = (__m512bh)_mm512_set1_epi32(pair);
            for (int j = 0; j < 4; ++j) acc[m][j] = _mm512_dpbf16_ps(acc[m][j], xb, (__m512bh)w[j]);
        }
    }
    add_exceptions<M>(acc, x, ldx, exc, exc_end);
    store_tile<M>(acc, y, ldy, cols, accumulate);
}

// A 12-bit panel to the plain layout, exceptions patched in.
MOE_BF16_TARGET void decode_panel12(const uint8_t* wp, int64_t k2, const uint8_t* table64, const Exception12* exc,
                                    const Exception12* exc_end, uint16_t* out) {
    const __m512i table = _mm512_loadu_si512(table64);
    for (int64_t kp = 0; kp < k2; ++kp) {
        __m512i w[4];
        decode_pair12(wp + kp * kPair12Bytes, table, w);
        for (int j = 0; j < 4; ++j) _mm512_storeu_si512(out + kp * kPairStride + 32 * j, w[j]);
    }
    for (; exc < exc_end; ++exc) out[exc->kp * kPairStride + exc->slot] = exc->value;
}

}  // namespace

void pack_bf16_panels(const uint16_t* w, int64_t n, int64_t k, uint16_t* out) {
    const int64_t k2 = (k + 1) / 2;
    for (int64_t p = 0; p < bf16_panel_count(n); ++p) {
        uint16_t* dst = out + p * k2 * kPairStride;
        const int64_t c1 = std::min(kBf16PanelCols, n - p * kBf16PanelCols);
        // k pairs outer, columns inner: the panel is written front to back, and the 64 source
        // rows are read 4 bytes at a time (their current lines stay in L1).
        for (int64_t kp = 0; kp < k2; ++kp)
            gather_pair_row(w + p * kBf16PanelCols * k, k, c1, kp, dst + kp * kPairStride);
    }
}

namespace {

// The rows of one panel in tiles of 6, the tiles after the first prefetching `next` (the panel
// the caller computes next; lines_per_pair 64-byte lines per k pair at pair_stride bytes) toward
// L2: the second tile the first two lines of each k pair, the third the rest. tile(M, r, PF,
// pf, pf_stride) runs M rows from row r. Nothing is prefetched below kBf16PanelPrefetchMinRows
// rows or without a next panel.
template <int LinesPerPair, typename Tile>
void panel_row_tiles(int64_t rows, const char* next, int64_t pair_stride, Tile&& tile) {
    static_assert(LinesPerPair >= 3 && LinesPerPair <= 4, "two passes of at most two lines");
    int64_t r = 0;
    auto one = [&](auto m) {
        const int64_t pass = r / kTileRows;  // 0: the first tile
        if (next == nullptr || rows < kBf16PanelPrefetchMinRows || pass == 0 || pass > 2) {
            tile(m, r, std::integral_constant<int, 0>{}, nullptr, 0);
        } else if (pass == 1) {
            tile(m, r, std::integral_constant<int, 2>{}, next, pair_stride);
        } else {
            tile(m, r, std::integral_constant<int, LinesPerPair - 2>{}, next + 2 * 64, pair_stride);
        }
    };
    for (; r + kTileRows <= rows; r += kTileRows) one(std::integral_constant<int, kTileRows>{});
    with_rows<kTileRows - 1>(rows - r, one);
}

}  // namespace

void bf16_panel_block(const uint16_t* x, int64_t ldx, int64_t rows, const uint16_t* wp, int64_t n, int64_t k,
                      int64_t n_begin, int64_t n_end, float* y, int64_t ldy, bool accumulate, bool prefetch_following) {
    const int64_t k2 = (k + 1) / 2;
    n_end = std::min(n_end, n);
    for (int64_t c0 = n_begin; c0 < n_end; c0 += kBf16PanelCols) {
        const int64_t p = c0 / kBf16PanelCols;
        const uint16_t* panel = wp + p * k2 * kPairStride;
        const int64_t cols = std::min(kBf16PanelCols, n_end - c0);
        float* yc = y + (c0 - n_begin);
        // Rows in tiles of 6: the panel (k2 * 256 bytes) is read from DRAM by the first tile and
        // from L2 by the rest. With 13 rows or more, the second and third tiles, which compute
        // with the memory idle, prefetch half of the next panel each toward L2, so that its
        // first tile computes instead of waiting for DRAM. gemm_decode_bench --packed 1,
        // 1536 x 1024, 16 rows: 292-310 -> 345-349 GFLOP/s. With one later tile (7-12 rows) the
        // prefetches outran the arithmetic: 8 rows went 249 -> 180, 12 rows no change; so none.
        // The tiles' arithmetic is unchanged.
        static_assert(kBf16PanelPrefetchMinRows == 2 * kTileRows + 1, "two later tiles");
        const bool has_next = c0 + kBf16PanelCols < n_end || (prefetch_following && p + 1 < bf16_panel_count(n));
        const char* next = has_next ? reinterpret_cast<const char*>(panel + k2 * kPairStride) : nullptr;
        panel_row_tiles<4>(rows, next, kPairStride * 2, [&](auto m, int64_t r, auto pf, const char* pfp, int64_t pfs) {
            panel_tile<decltype(m)::value, decltype(pf)::value>(x + r * ldx, ldx, panel, k2, yc + r * ldy, ldy, cols,
                                                                accumulate, pfp, pfs);
        });
    }
}

// ---- 12-bit panels

Bf16Panels12Plan plan_bf16_panels12(const uint16_t* w, int64_t n, int64_t k, ThreadPool* pool) {
    Bf16Panels12Plan plan;
    plan.n = n;
    plan.k = k;
    const int64_t panels = bf16_panel_count(n);
    // Ranges of panels (columns), on the pool when given. Each range counts into its own
    // histogram; integer counts merge to the same totals whichever range finishes first.
    auto over_panels = [&](auto&& fn) {
        if (pool != nullptr) {
            pool->parallel_for(panels, fn);
        } else {
            fn(int64_t{0}, panels);
        }
    };
    // The 15 most common high bytes get codes 0-14; code 15 reads as 0x00 with a zero low byte.
    std::vector<int64_t> hist(256, 0);
    std::mutex merge;
    over_panels([&](int64_t p0, int64_t p1) {
        int64_t local[256] = {};
        const uint16_t* end = w + std::min(n, p1 * kBf16PanelCols) * k;
        for (const uint16_t* v = w + p0 * kBf16PanelCols * k; v < end; ++v) ++local[*v >> 8];
        std::lock_guard<std::mutex> lock(merge);
        for (int i = 0; i < 256; ++i) hist[static_cast<size_t>(i)] += local[i];
    });
    std::vector<int> order(256);
    for (int i = 0; i < 256; ++i) order[static_cast<size_t>(i)] = i;
    // NOTE: std::sort with the byte as tie-break (deterministic); stable_sort would take a
    // temporary buffer from nothrow new.
    std::sort(order.begin(), order.end(), [&](int a, int b) {
        const int64_t ha = hist[static_cast<size_t>(a)], hb = hist[static_cast<size_t>(b)];
        return ha != hb ? ha > hb : a < b;
    });
    for (int c = 0; c < kEscapeCode; ++c) plan.table[c] = static_cast<uint8_t>(order[static_cast<size_t>(c)]);
    plan.table[kEscapeCode] = 0;
    std::memset(plan.code_of, -1, sizeof(plan.code_of));
    for (int c = kEscapeCode - 1; c >= 0; --c) plan.code_of[plan.table[c]] = static_cast<int8_t>(c);
    // Exceptions per panel, then their offsets.
    plan.exc_offsets.assign(static_cast<size_t>(panels + 1), 0);
    over_panels([&](int64_t p0, int64_t p1) {
        for (int64_t p = p0; p < p1; ++p) {
            int32_t count = 0;
            const uint16_t* end = w + std::min(n, (p + 1) * kBf16PanelCols) * k;
            for (const uint16_t* v = w + p * kBf16PanelCols * k; v < end; ++v)
                count += plan.code_of[*v >> 8] < 0 && *v != 0;
            plan.exc_offsets[static_cast<size_t>(p + 1)] = count;
        }
    });
    // Counts to offsets. The offsets are int32: a matrix of more than 2^31 values could overflow
    // them, so the running total is int64, and past INT32_MAX the plan says so.
    for (int64_t p = 0; p < panels; ++p) {
        plan.exceptions += plan.exc_offsets[static_cast<size_t>(p + 1)];
        if (plan.exceptions > INT32_MAX) {
            plan.exc_offsets.clear();
            plan.bytes = -1;
            return plan;
        }
        plan.exc_offsets[static_cast<size_t>(p + 1)] = static_cast<int32_t>(plan.exceptions);
    }
    plan.bytes = exc_list_offset12(n, k) + plan.exceptions * static_cast<int64_t>(sizeof(Exception12));
    return plan;
}

void pack_bf16_panels12(const uint16_t* w, const Bf16Panels12Plan& plan, int64_t p_begin, int64_t p_end, uint8_t* out) {
    const int64_t n = plan.n, k = plan.k, k2 = (k + 1) / 2;
    if (p_begin == 0) {
        Header12 h{};
        h.n = n;
        h.k = k;
        h.exceptions = plan.exceptions;
        for (int lane = 0; lane < 4; ++lane) std::memcpy(h.table + 16 * lane, plan.table, sizeof(plan.table));
        std::memset(out, 0, kHeader12Bytes);
        std::memcpy(out, &h, sizeof(h));
        auto* offs = reinterpret_cast<int32_t*>(out + kHeader12Bytes + bf16_panel_count(n) * k2 * kPair12Bytes);
        std::memcpy(offs, plan.exc_offsets.data(), plan.exc_offsets.size() * sizeof(int32_t));
    }
    // Value e of a pair row and value e + 64 share code byte byte_pos12(e) (low and high nibble)
    // and sit at that position of the two halves of the low-byte plane.
    uint8_t pos[64];
    for (int e = 0; e < 64; ++e) pos[e] = static_cast<uint8_t>(byte_pos12(e));
    auto* exc = reinterpret_cast<Exception12*>(out + exc_list_offset12(n, k));
    std::vector<Exception12> found;
    uint16_t row[2 * kBf16PanelCols];  // one pair row in the plain layout
    for (int64_t p = p_begin; p < p_end; ++p) {
        uint8_t* dst = out + kHeader12Bytes + p * k2 * kPair12Bytes;
        found.clear();
        const int64_t c1 = std::min(kBf16PanelCols, n - p * kBf16PanelCols);
        const uint16_t* src = w + p * kBf16PanelCols * k;
        for (int64_t kp = 0; kp < k2; ++kp) {
            gather_pair_row(src, k, c1, kp, row);
            uint8_t* lo = dst + kp * kPair12Bytes;
            uint8_t* codes = lo + 128;
            uint8_t nib[2];
            for (int e = 0; e < 64; ++e) {
                for (int half = 0; half < 2; ++half) {
                    const int slot = e + 64 * half;
                    const uint16_t v = row[slot];
                    const int8_t code = plan.code_of[v >> 8];
                    if (code >= 0) {
                        lo[64 * half + pos[e]] = static_cast<uint8_t>(v & 0xff);
                        nib[half] = static_cast<uint8_t>(code);
                    } else {
                        lo[64 * half + pos[e]] = 0;
                        nib[half] = kEscapeCode;
                        if (v != 0)
                            found.push_back(Exception12{static_cast<int32_t>(kp), static_cast<uint8_t>(slot), 0, v});
                    }
                }
                codes[pos[e]] = static_cast<uint8_t>(nib[0] | nib[1] << 4);
            }
        }
        // Found in (k pair, slot) order; stored by column group first (Exception12).
        Exception12* e = exc + plan.exc_offsets[static_cast<size_t>(p)];
        for (int group = 0; group < 4; ++group)
            for (const Exception12& f : found)
                if (f.slot / 32 == group) *e++ = f;
    }
}

int64_t bf16_panels12_exceptions(const uint8_t* packed) {
    return header12(packed).exceptions;
}

void unpack_bf16_panels12(const uint8_t* packed, uint16_t* panels) {
    unpack_bf16_panels12_range(packed, 0, bf16_panel_count(header12(packed).n), panels);
}

void unpack_bf16_panels12_range(const uint8_t* packed, int64_t p_begin, int64_t p_end, uint16_t* panels) {
    const Header12& h = header12(packed);
    const int64_t k2 = (h.k + 1) / 2;
    const int32_t* offs = exc_offsets12(packed, h.n, h.k);
    const Exception12* exc = exceptions12(packed, h.n, h.k);
    for (int64_t p = p_begin; p < p_end; ++p)
        decode_panel12(panel12(packed, p, k2), k2, h.table, exc + offs[p], exc + offs[p + 1],
                       panels + (p - p_begin) * k2 * kPairStride);
}

void bf16_panels12_block(const uint16_t* x, int64_t ldx, int64_t rows, const uint8_t* packed, int64_t n_begin,
                         int64_t n_end, float* y, int64_t ldy, bool accumulate, bool prefetch_following) {
    const Header12& h = header12(packed);
    const int64_t n = h.n, k2 = (h.k + 1) / 2;
    const int32_t* offs = exc_offsets12(packed, n, h.k);
    const Exception12* exc = exceptions12(packed, n, h.k);
    const uint8_t* table = h.table;
    n_end = std::min(n_end, n);
    // Every row tile decodes the panel as it goes: the later ones from L2, where the first
    // brought it, prefetching the next panel as bf16_panel_block's do. (A first tile that also
    // stored the decoded panel for the later ones to read plain, as this did before, ran 8-row
    // items at 0.70 of this and 32-64 rows at 0.93-0.97: moe_experts_bench.) Every tile adds the
    // panel's exceptions to its sums in the same order, so a row's bits do not depend on the row
    // count, its tile or the thread (batch invariant).
    for (int64_t c0 = n_begin; c0 < n_end; c0 += kBf16PanelCols) {
        const int64_t p = c0 / kBf16PanelCols;
        const uint8_t* wp = panel12(packed, p, k2);
        const int64_t cols = std::min(kBf16PanelCols, n_end - c0);
        float* yc = y + (c0 - n_begin);
        const Exception12* e0 = exc + offs[p];
        const Exception12* e1 = exc + offs[p + 1];
        const bool has_next = c0 + kBf16PanelCols < n_end || (prefetch_following && p + 1 < bf16_panel_count(n));
        const char* next = has_next ? reinterpret_cast<const char*>(panel12(packed, p + 1, k2)) : nullptr;
        panel_row_tiles<3>(rows, next, kPair12Bytes, [&](auto m, int64_t r, auto pf, const char* pfp, int64_t pfs) {
            panel12_tile<decltype(m)::value, decltype(pf)::value>(x + r * ldx, ldx, wp, k2, table, yc + r * ldy, ldy,
                                                                  cols, accumulate, e0, e1, pfp, pfs);
        });
    }
}

}  // namespace moe::cpu
