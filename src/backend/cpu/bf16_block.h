// Our AVX512-BF16 kernels over one column range of a bf16 matrix in any CPU layout: the one
// place that switches on CpuLayout. Row-major matrices go to the dot-product tiles
// (bf16_tiles.h), panels to the broadcast kernel (bf16_panels.h), the 12-bit form to its
// decoding kernel (bf16_panels.h). A new layout adds its case here.
#pragma once

#include <cstdint>

#include "backend/cpu/cpu_weight.h"

namespace moe::cpu {

// y[r * ldy + (c - n_begin)] (+)= sum_k x[r * ldx + k] * w[c, k] for r in [0, rows),
// c in [n_begin, n_end). x: bf16 rows zero padded to bf16_padded_k(w.k) (f32_rows_to_bf16).
// w: bf16 in any CpuLayout; for the panel layouts n_begin is a multiple of kBf16PanelCols.
// prefetch_following: the panel kernels also prefetch the matrix's panel after n_end (the
// caller's next call reads it). Requires bf16_tiles_available().
void bf16_block(const uint16_t* x, int64_t ldx, int64_t rows, const CpuMatrix& w, int64_t n_begin, int64_t n_end,
                float* y, int64_t ldy, bool accumulate, bool prefetch_following = false);

}  // namespace moe::cpu
