// oneDNN matmul over the packed bf16 panels, read in place: the route to AMX.
//
// For K a multiple of 32, the plain panel layout (bf16_panels.h: element (n, k) at
// (n / 64) * K2 * 128 + (k / 2) * 128 + (n % 64) * 2 + k % 2) is exactly oneDNN's BA16a64b2a
// layout of the K x N weights: N blocks of 64 outer, K blocks of 32 next, then 16 k pairs x 64
// columns x 2. That is the blocked B its brgemm matmul kernels read without a copy, on AMX
// tiles where the CPU has them and on AVX512-BF16 elsewhere. So the weights packed once at load
// serve both our kernels and oneDNN's, with no second copy in memory. The 12-bit form is decoded
// back to plain panels a few at a time into a per-thread buffer first.
//
// Each call runs on the calling thread (oneDNN with one OpenMP thread): the backend's pool
// splits the columns, as for our own kernels, and oneDNN's OpenMP team never runs beside the
// pool. Primitives are cached per thread; strided rows and accumulation go through dense
// per-thread buffers (oneDNN 2.6's brgemm takes dense rows only).
//
// Batch invariance: a row's result is bitwise the same whatever the row count and the column
// range of the call (tests/ops/onednn_panels_test.cc). Without AMX, oneDNN's AVX512-BF16 brgemm
// gives that on a primitive per (rows, columns, K) (measured). With AMX it does not: oneDNN picks
// its AVX512-BF16 brgemm for calls of few outputs and AMX above, and on AMX splits K into chunks
// by the call's rows and columns. So where the CPU has AMX every call is cut into products of
// fixed shapes: 32 rows (the last chunk zero padded) by groups of 4 panels counted from the
// matrix's first column (the last group as wide as the matrix's remaining panels), so one or
// two AMX primitives per matrix width and K.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>

#include "backend/cpu/cpu_weight.h"
#include "moe/status.h"

namespace moe::cpu {

// Whether oneDNN can read the panels of a matrix with reduction length k (k % 32 == 0).
inline bool onednn_panels_usable(int64_t k) {
    return k > 0 && k % 32 == 0;
}

// Builds a small bf16 matmul over BA16a64b2a weights on this thread: the oneDNN implementation
// it picked ("brg:avx512_core_amx", "brg:avx512_core_bf16", ...), or why it cannot.
StatusOr<std::string> onednn_panels_probe();

// bf16_panel_block's contract (bf16_panels.h) through oneDNN: y[r * ldy + (c - n_begin)] (+)=
// sum_k x[r * ldx + k] * w[c, k] for r in [0, rows), c in [n_begin, n_end). w: a matrix in
// plain panels (CpuLayout::kPanels) or their 12-bit form (kPanels12). n_begin a multiple of kBf16PanelCols;
// x bf16 rows, ldx >= k; requires onednn_panels_usable(k). A shape oneDNN refuses (no matmul, or
// only its reference one) runs on our kernels instead (bf16_panel_block's), with one warning per
// process and a count (onednn_panels_refused). Errors (oneDNN's at run time, memory) come back as
// a Status; y may then be partly written.
Status onednn_panel_block(const uint16_t* x, int64_t ldx, int64_t rows, const CpuMatrix& w, int64_t n_begin,
                          int64_t n_end, float* y, int64_t ldy, bool accumulate);

// The first error of the calls that the pool's threads make (one op's worth).
class FirstError {
public:
    void keep(Status status) {
        if (status.ok()) return;
        std::lock_guard<std::mutex> lock(mutex_);
        if (first_.ok()) first_ = std::move(status);
    }
    Status take() { return std::move(first_); }

private:
    std::mutex mutex_;
    Status first_;
};

// oneDNN matmuls run by onednn_panel_block in this process (for tests: the route was taken).
int64_t onednn_panels_calls();
// Shapes (per thread) oneDNN refused, and calls made to refuse for testing: products that ran on
// our kernels instead.
int64_t onednn_panels_refused();
// Tests only: every later call takes the refused path (our kernels), until called with false.
void onednn_panels_refuse_for_testing(bool refuse);

// Column ranges that start on a multiple of this (and end on one or at n) compute nothing
// twice: on AMX a product covers whole groups of columns (above); elsewhere one panel.
int64_t onednn_panels_align_cols();

// Primitives this thread has built (for tests: the cache must stay bounded).
int64_t onednn_panels_cached_primitives();

}  // namespace moe::cpu
