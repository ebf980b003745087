// bf16 matrices packed once at load into column panels for broadcast VDPBF16PS, and the
// kernel over them (AVX512-BF16).
//
// Layout: a [N, K] bf16 matrix becomes ceil(N / 64) panels of 64 columns. Panel p holds, for
// each pair of k (kp = 0 .. ceil(K / 2) - 1), 64 columns x 2 values: element (n, k) sits at
//   p * (K2 * 128) + (k / 2) * 128 + (n % 64) * 2 + (k % 2),   p = n / 64, K2 = ceil(K / 2).
// Columns past N and the odd K's last value are zeros. One 64-byte vector is 16 columns x one k
// pair, so a broadcast pair of x against it is one VDPBF16PS with no horizontal sums, and a
// panel is one contiguous run of K2 * 256 bytes: decode streams it front to back (one
// sequential stream per thread), prefill holds it in L2 while 6-row tiles of x pass.
//
// Why pack: on the 2-core EPYC (AVX512-BF16, no AMX) benchmarks/tile_layout_bench measured
// 226-228 GFLOP/s for a 6 x 64 broadcast tile on this layout against 146-178 for the dot-product
// tiles over the checkpoint layout (bf16_tiles.h), one thread.
//
// Every output element is the sum over k pairs in increasing order in one f32 lane, started
// from zero, whatever the row count, tile height, column range or thread: results are bitwise
// independent of batch composition and thread count (batch invariant). They differ from
// bf16_tiles.h's (another summation order) by float rounding only.
#pragma once

#include <cstdint>
#include <vector>

namespace moe {
class ThreadPool;
}

namespace moe::cpu {

inline constexpr int64_t kBf16PanelCols = 64;
// From this many rows (three row tiles or more), bf16_panel_block's later tiles prefetch the
// next panel of its column range while they compute (see bf16_panels.cc).
inline constexpr int64_t kBf16PanelPrefetchMinRows = 13;

// Panels of an n-column matrix.
inline int64_t bf16_panel_count(int64_t n) {
    return (n + kBf16PanelCols - 1) / kBf16PanelCols;
}

// Elements (uint16_t) of the packed form of an [n, k] matrix.
inline int64_t bf16_panels_elems(int64_t n, int64_t k) {
    return bf16_panel_count(n) * kBf16PanelCols * ((k + 1) / 2 * 2);
}

// w [n, k] bf16 row-major -> out (bf16_panels_elems(n, k) elements), the layout above.
void pack_bf16_panels(const uint16_t* w, int64_t n, int64_t k, uint16_t* out);

// y[r * ldy + (c - n_begin)] (+)= sum_k x[r * ldx + k] * w[c, k] for r in [0, rows),
// c in [n_begin, n_end), with w packed as above (wp: the whole matrix, n columns). n_begin must
// be a multiple of kBf16PanelCols. x: bf16 rows zero padded to an even length (f32_rows_to_bf16
// pads to 32). accumulate: add to y instead of overwriting it. Requires bf16_tiles_available().
// With kBf16PanelPrefetchMinRows rows or more, each panel's later row tiles prefetch the next
// panel of the range toward L2; prefetch_following: also the matrix's panel after n_end (the
// caller's next call reads it: one MoE work item is one panel).
void bf16_panel_block(const uint16_t* x, int64_t ldx, int64_t rows, const uint16_t* wp, int64_t n, int64_t k,
                      int64_t n_begin, int64_t n_end, float* y, int64_t ldy, bool accumulate,
                      bool prefetch_following = false);

// ---- 12-bit panels: the same layout, lossless, for weights streamed at a few rows a step ----
//
// A decode step streams each active expert's weights from DRAM for two or three rows, so its
// time is the bytes read, and the arithmetic has room to spare. The 12-bit form stores each
// k pair row of a panel (128 bf16 values, 256 bytes) in 192: the 128 low bytes, then 64 bytes of
// 4-bit codes of the high bytes (sign and 7 exponent bits), which a 16-entry table per matrix
// maps back (one VPSHUFB). Weights' exponents cluster: on the random moe-s experts the 15 most
// common high bytes cover 99.98% of the values. The rest (and -0.0) are exceptions: coded as
// +0.0 in the panel and kept exactly in a per-panel list whose terms the kernel adds to each
// tile's sums in registers before it stores them, in the same order whatever the row count (a
// row's bits do not depend on the other rows). Nothing is rounded: the products use the
// checkpoint's bf16 values; only the f32 summation order of the exception terms differs from
// the plain panels.
//
// Buffer: a 128-byte header (n, k, table), the panels (ceil(n / 64) x ceil(k / 2) x 192 bytes),
// the exception offsets per panel (int32, panels + 1), the exceptions.
struct Bf16Panels12Plan {
    int64_t n = 0, k = 0;
    uint8_t table[16] = {};            // code -> high byte; code 15 is the escape (+0.0)
    int8_t code_of[256] = {};          // high byte -> code, -1: an exception unless the value is +0.0
    std::vector<int32_t> exc_offsets;  // per panel, into the exception list (panels + 1)
    int64_t exceptions = 0;            // values kept aside
    int64_t bytes = 0;                 // of the whole buffer; -1: exceptions past INT32_MAX (not
                                       // representable: offsets empty, do not pack)
};

// Counts what a [n, k] bf16 matrix needs in the 12-bit form (two passes over w, over ranges of
// panels on `pool` when given; the same plan either way).
Bf16Panels12Plan plan_bf16_panels12(const uint16_t* w, int64_t n, int64_t k, ThreadPool* pool = nullptr);
// Writes the header and panels [p_begin, p_end) with their exceptions into out (plan.bytes,
// 64-byte aligned). Panels are independent: ranges may be packed by different threads.
void pack_bf16_panels12(const uint16_t* w, const Bf16Panels12Plan& plan, int64_t p_begin, int64_t p_end, uint8_t* out);
int64_t bf16_panels12_exceptions(const uint8_t* packed);
// The plain panels (bf16_panels_elems(n, k) elements) that `packed` encodes, exceptions included.
void unpack_bf16_panels12(const uint8_t* packed, uint16_t* panels);
// Panels [p_begin, p_end) of that plain form, one after another from `panels`
// ((p_end - p_begin) * bf16_panels_elems(kBf16PanelCols, k) elements).
void unpack_bf16_panels12_range(const uint8_t* packed, int64_t p_begin, int64_t p_end, uint16_t* panels);

// bf16_panel_block over the 12-bit form (same arguments; n and k come from the header).
void bf16_panels12_block(const uint16_t* x, int64_t ldx, int64_t rows, const uint8_t* packed, int64_t n_begin,
                         int64_t n_end, float* y, int64_t ldy, bool accumulate, bool prefetch_following = false);

}  // namespace moe::cpu
