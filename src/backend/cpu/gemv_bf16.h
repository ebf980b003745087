// GEMM with bf16 weights on our own AVX512-BF16 tiles (bf16_tiles.h): y[M, N] (+)= x[M, K] *
// w[N, K]^T (+ bias), x rounded to bf16, f32 accumulation.
//
// At decode, M (tokens per weight matrix) is 1 to a few and the step is bound by reading the
// weights from DRAM; oneDNN's matmul reaches a fraction of the bandwidth there (PERF_NOTES: 5.6
// GB/s at M=1, 1 thread). The tiles stream each weight row once for all M rows, eight weight
// rows in flight per thread. For larger M they are also the prefill kernel: one OpenMP region
// per call, no per-shape primitive to build, batch invariant. Columns are spread over
// the pool's threads in 64-column chunks taken from a shared counter.
#pragma once

#include "backend/cpu/cpu_gemm.h"

namespace moe::cpu {

// Whether gemv_bf16 can run `p` on this CPU (AVX512-BF16 present, bf16 weights, M <= max_rows).
bool gemv_bf16_applies(const GemmProblem& p, int64_t max_rows);

// Runs `p`; bitwise deterministic and independent of the pool size. Where panel_route_onednn(route,
// M), packed panels with K % 32 == 0 go through oneDNN on each thread (onednn_panels.h); its
// errors come back here.
Status gemv_bf16(const GemmProblem& p, ThreadPool* pool, PanelRoute route = PanelRoute::kOwn);

}  // namespace moe::cpu
