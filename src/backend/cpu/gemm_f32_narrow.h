// f32 GEMMs with few output columns (routers: N = number of experts; shared-expert gates: N =
// 1) on the backend's own pool with AVX-512: y[M, N] (+)= x[M, K] * w[N, K]^T (+ bias).
//
// OpenBLAS would run these on its own pthreads, which then spin against the pool's threads; and
// its result for a row depends on M (blocking), where here each output is one dot product in a
// fixed order: bitwise batch invariant and independent of the thread count.
#pragma once

#include "backend/cpu/gemm_problem.h"
#include "core/thread_pool.h"

namespace moe::cpu {

// Columns up to which f32 problems take this path.
inline constexpr int64_t kF32NarrowMaxCols = 512;

// Whether f32_narrow_gemm runs `p` (f32 weights, N <= kF32NarrowMaxCols, AVX-512F present).
bool f32_narrow_applies(const GemmProblem& p);

void f32_narrow_gemm(const GemmProblem& p, ThreadPool* pool);

}  // namespace moe::cpu
