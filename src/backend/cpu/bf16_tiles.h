// bf16 x bf16 -> f32 dot-product tiles on AVX512-BF16, over weights in their checkpoint layout
// ([N, K] row-major, as the safetensors hold them). Models loaded on the CPU normally run on
// the packed column panels instead (bf16_panels.h, made at load, 1.3-1.5x faster); these tiles
// serve matrices that were not packed (CpuBackendOptions::pack_weights = false, weights the
// caller did not prepare through Backend::prepare_weight).
//
// bf16_dot_block computes y[r, n] = sum_k x[r, k] * w[n, k] for a block of rows and columns.
// Up to 8 rows (decode), the weight rows are read one after another, each against up to 4 rows
// of x: one sequential stream per thread, which the prefetchers follow best. Above, columns go
// outer in groups of C weight rows, rows inner in groups of 6, so each group of C
// weight rows (C * K * 2 bytes: 16 KB at C = 4, K = 2048) is read from DRAM once and stays in
// L1 while every row of x streams past it; M * C independent accumulators hide the VDPBF16PS
// latency, and the final horizontal sums are a shuffle tree (4 outputs per reduction).
//
// x rows are bf16, zero padded to round_up(K, 32) (f32_rows_to_bf16 writes that), so the K tail
// needs a mask only on the weight side. Every output element is summed in the same order
// whatever tile, row block or column block it falls in (per-lane VDPBF16PS over k, then the
// same shuffle tree), so results are bitwise independent of how callers split rows and columns
// over threads and of how many rows a batch has: batch invariant.
#pragma once

#include <cstdint>

namespace moe::cpu {

// Weight rows (output columns) handled together; column splits at multiples of it waste nothing.
inline constexpr int64_t kBf16ColGroup = 8;
// Rows of x kept in L2 while a column range streams past them.
inline constexpr int64_t kBf16RowBlock = 64;

// Padded row length (elements) of a bf16 x row for reduction length k.
inline int64_t bf16_padded_k(int64_t k) {
    return (k + 31) / 32 * 32;
}

// Whether the CPU has AVX512-BF16 (the tiles need it; checked once).
bool bf16_tiles_available();

// x[rows, k] f32 (row stride ldx) -> out[rows, padded_k] bf16, rounded to nearest even, zero
// padded; out row stride ldo >= bf16_padded_k(k). Requires bf16_tiles_available().
void f32_rows_to_bf16(const float* x, int64_t ldx, int64_t rows, int64_t k, uint16_t* out, int64_t ldo);

// y[r * ldy + (n - n_begin)] (+)= sum_k x[r * ldx + k] * w[n * k + k'] for r in [0, rows),
// n in [n_begin, n_end). x: bf16 rows padded as above (ldx >= bf16_padded_k(k)); w: bf16
// [N, k] row-major. accumulate: add to y instead of overwriting it. Requires
// bf16_tiles_available().
void bf16_dot_block(const uint16_t* x, int64_t ldx, int64_t rows, const uint16_t* w, int64_t k, int64_t n_begin,
                    int64_t n_end, float* y, int64_t ldy, bool accumulate);

// out[i] = bf16(silu(g[i]) * u[i]) for i in [0, n), silu(g) = g / (1 + exp(-g)); exp by a
// degree-6 polynomial after range reduction (relative error ~2e-7, far below the bf16 rounding
// that follows). Requires bf16_tiles_available().
void silu_mul_to_bf16(const float* g, const float* u, int64_t n, uint16_t* out);

// Splits items with the given costs into `parts` contiguous ranges of about equal total cost:
// part p is [bounds[p], bounds[p + 1]). A pure function of its inputs (deterministic work split).
// bounds must hold parts + 1 entries.
void split_by_cost(const int64_t* costs, int64_t num_items, int parts, int64_t* bounds);

}  // namespace moe::cpu
