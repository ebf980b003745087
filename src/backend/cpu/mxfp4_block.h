// MXFP4 weights (gpt-oss experts; moe/quant.h) multiplied as the checkpoint stores them:
// 4.25 bits per weight in memory, decoded in registers, never expanded to a bf16 copy.
//
// Layout (CpuLayout::kMxfp4, CpuMatrix data / scales):
//   values  u8 [n, k / 32, 16]: block b of row c holds w[c][32b + 2j] in the low nibble of byte j
//           and w[c][32b + 2j + 1] in the high nibble (e2m1: sign, 2 exponent bits, 1 mantissa bit)
//   scales  u8 [n, k / 32]: e8m0, w = e2m1 * 2^(scale - 127)
//
// Decode (AVX512-BF16, few rows): per (column, block) the 16 bytes are zero-extended to 16 dwords
// d; the word pair of dword j, (d | d << 12), holds nibble 2j's index in its low word's low bits
// and nibble 2j+1's in its high word; one VPERMW looks both up in that block's 32-word table
// (the 16 bf16 values e2m1(i) * 2^(s - 127), twice, so index bit 4 is ignored), giving the
// block's 32 bf16 weights in k order. One VDPBF16PS per row of x follows: the scale costs a
// table pointer, nothing per row.
//
// Exactness: e2m1 values have 2 significant bits, so e2m1 * 2^(s-127) is exact in bf16 for every
// scale whose values are finite; scales 0 and 1 give values below bf16's normal range
// (< 2^-126) that VDPBF16PS, like every AVX512-BF16 product here, treats as zero (its inputs are
// denormals-are-zero); the error is below 6 * 2^-126 * sum |x| per output. Weights that are not
// finite in f32 (scale 0xff is NaN; 2^(s-127) * |e2m1| >= 2^128 for s >= 253) are refused when
// the matrix is prepared (check_mxfp4_finite, moe/quant.h), so no kernel ever meets them.
//
// Prefill (more than kMxfp4DecodeMaxRows rows): the column range is expanded, a slice at a time,
// into bf16 rows in thread-local scratch (the same table lookups), and the checkpoint-layout
// bf16 tiles multiply by them (bf16_dot_block). Both routes sum each output in the same order
// (per-lane VDPBF16PS over k from zero, then the tiles' shuffle tree), so results are bitwise the
// same whatever the row count: batch invariant, as the bf16 kernels are.
//
// Without AVX512-BF16: the f32 route (mxfp4_matmul with kAvx512F, or kScalar without AVX-512F)
// decodes to f32 with VPERMPS on the nibbles (a 16-entry f32 table per scale), x unrounded.
#pragma once

#include <cstdint>
#include <string_view>

#include "backend/cpu/gemm_problem.h"
#include "core/thread_pool.h"
#include "moe/quant.h"
#include "moe/status.h"

namespace moe::cpu {

// Up to this many rows a product decodes in registers; above, it expands slices to bf16.
inline constexpr int64_t kMxfp4DecodeMaxRows = 4;

// The bf16 block product over an MXFP4 matrix, with bf16_block's contract (bf16_block.h): x bf16
// rows zero padded to bf16_padded_k(w.k), y relative to n_begin. Picks decode or expansion by
// `rows`. Requires bf16_tiles_available().
void mxfp4_block(const uint16_t* x, int64_t ldx, int64_t rows, const CpuMatrix& w, int64_t n_begin, int64_t n_end,
                 float* y, int64_t ldy, bool accumulate);
// The two routes of mxfp4_block, for tests and benchmarks.
void mxfp4_decode_block(const uint16_t* x, int64_t ldx, int64_t rows, const CpuMatrix& w, int64_t n_begin,
                        int64_t n_end, float* y, int64_t ldy, bool accumulate);
void mxfp4_expand_block(const uint16_t* x, int64_t ldx, int64_t rows, const CpuMatrix& w, int64_t n_begin,
                        int64_t n_end, float* y, int64_t ldy, bool accumulate);

enum class Mxfp4Kernel : uint8_t {
    kAuto,     // AVX512-BF16 when present (bf16_matmul -> mxfp4_block), else kAvx512F, else kScalar
    kDecode,   // mxfp4_decode_block for every row count (AVX512-BF16)
    kExpand,   // mxfp4_expand_block for every row count (AVX512-BF16)
    kAvx512F,  // f32 decode with AVX-512F, x in f32
    kScalar,   // plain C++, x in f32
};

// Whether `kernel` can run on this CPU.
bool mxfp4_kernel_available(Mxfp4Kernel kernel);

// y = x * w^T (+ bias) for p.w in CpuLayout::kMxfp4, columns split over the pool (deterministic:
// each output is computed by one call, in a fixed order). GemmEngine::run sends every MXFP4
// product here. kInvalidArgument when `kernel` is not available here.
Status mxfp4_matmul(const GemmProblem& p, ThreadPool* pool, Mxfp4Kernel kernel = Mxfp4Kernel::kAuto);

}  // namespace moe::cpu
