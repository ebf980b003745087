// Decode-shaped GEMM with bf16 weights: y[M, N] (+)= x[M, K] * w[N, K]^T for M <= 4.
//
// At decode, M (tokens per weight matrix) is 1 to a few and the step is bound by reading the
// weights from DRAM. oneDNN's matmul reaches a fraction of the bandwidth there (PERF_NOTES: 5.6
// GB/s at M=1, 1 thread), so this kernel streams each weight row once for all M rows of x with
// AVX512-BF16 dot products, four weight rows in flight per thread, split over N across the pool.
// x is rounded to bf16 (as the oneDNN path does); accumulation is f32.
#pragma once

#include "backend/cpu/cpu_gemm.h"

namespace moe::cpu {

inline constexpr int64_t kGemvMaxRows = 4;

// Whether gemv_bf16 can run `p` on this CPU (AVX512-BF16 present, M <= kGemvMaxRows, bf16 w).
bool gemv_bf16_applies(const GemmProblem& p);

// Runs `p`; deterministic for a given N split (the pool size).
void gemv_bf16(const GemmProblem& p, ThreadPool* pool);

}  // namespace moe::cpu
