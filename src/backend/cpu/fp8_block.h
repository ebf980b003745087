// FP8 e4m3 block-scaled matrices on the CPU (#20; the format: moe/quant.h), kept as the
// checkpoint stores them: 1 byte per weight plus one f32 scale per block_n x block_k block.
//
//   w[c, j] = e4m3(values[c * k + j]) * scales[(c / block_n) * sk + j / block_k],  sk = ceil(k / block_k)
//
// Every e4m3 value is exactly a bf16 value (4 significant bits, exponents 2^-9 .. 2^8), so the
// kernels expand the bytes to bf16 in registers, multiply by x (rounded to bf16, as for bf16
// weights) with VDPBF16PS per k-block, and apply the block's scale to the block's f32 sum:
//
//   y[r, c] = sum over k-blocks b, in order, of  fma(scale(c, b), S(r, c, b), .)
//   S(r, c, b) = the bf16 tiles' sum (bf16_tiles.h: per-lane VDPBF16PS, then the shuffle tree)
//                of x[r, block b] . e4m3(w[c, block b])
//
// Up to kFp8DirectRows rows (decode) the bytes stream once, converted in registers, against all
// rows (4 weight rows x up to 4 rows of x per tile). Above (prefill), each group of
// kFp8PanelCols weight rows is expanded once to a bf16 panel in the thread's cache, which the
// same tiles then read for every group of 4 rows of x. Both sum in the same order, so results
// are bitwise the same whatever the row count (batch invariant) and however columns are split
// over threads.
//
// A block_k that is not a multiple of 32, or a CPU without AVX512-BF16, takes the scalar kernel
// (f32 products, the same per-block scaling), which serves correctness, not speed.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "backend/cpu/cpu_weight.h"
#include "backend/cpu/gemm_problem.h"
#include "core/thread_pool.h"
#include "moe/quant.h"
#include "moe/status.h"

namespace moe::cpu {

inline constexpr int64_t kFp8DirectRows = 8;
inline constexpr int64_t kFp8PanelCols = 64;

// The exact bf16 bit pattern of an e4m3 code (0x7fc0 with the code's sign for its NaNs, 0x7f
// and 0xff). Scalar; the reference of the vector conversion.
uint16_t fp8_e4m3_to_bf16_bits(uint8_t v);

// dst[i] = the bf16 bits of src[i] for i in [0, n), by the vector conversion the kernels use.
// Requires cpu_features().avx512f (AVX512-BW is part of every CPU this backend's kernels use).
void fp8_e4m3_to_bf16_avx512(const uint8_t* src, int64_t n, uint16_t* dst);

// bf16_block's contract (bf16_block.h) for a matrix in CpuLayout::kFp8Block: x bf16 rows zero
// padded to bf16_padded_k(w.k); y[r * ldy + (c - n_begin)] (+)= sum_k x[r, k] * w[c, k].
void fp8_block(const uint16_t* x, int64_t ldx, int64_t rows, const CpuMatrix& w, int64_t n_begin, int64_t n_end,
               float* y, int64_t ldy, bool accumulate);

// The whole product p (w in kFp8Block) with f32 x, for CPUs without AVX512-BF16: the scalar
// kernel, columns split over the pool. Bias and accumulate as GemmProblem says.
Status fp8_gemm_f32(const GemmProblem& p, ThreadPool* pool);

// The CPU form of a validated FP8 QuantizedTensor: one buffer holding the values (1 byte per
// weight) then the f32 scales at the next 64-byte boundary; matrix points into it. The caller
// (CpuBackend::prepare_quantized_weight) wraps both in a CpuWeight.
struct Fp8Prepared {
    CpuMatrix matrix;
    DeviceBuffer buffer;
};
StatusOr<Fp8Prepared> prepare_fp8_weight(Backend& backend, const QuantizedTensor& q);

}  // namespace moe::cpu
