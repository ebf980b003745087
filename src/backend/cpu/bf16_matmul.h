// GEMM with bf16 weights on our own AVX512-BF16 kernels, for any row count M, columns split
// over the backend's pool: y[M, N] (+)= x[M, K] * w[N, K]^T (+ bias), x rounded to bf16, f32
// accumulation. The matrix may be in any CpuLayout (bf16_block.h); with a PanelRoute that asks
// for it, oneDNN multiplies by the panels instead (onednn_panels.h).
//
// At decode, M (tokens per weight matrix) is 1 to a few and the step is bound by reading the
// weights from DRAM; oneDNN's matmul reaches a fraction of the bandwidth there (PERF_NOTES: 5.6
// GB/s at M=1, 1 thread). The tiles stream each weight row once for all M rows, eight weight
// rows in flight per thread. For larger M they are also the prefill kernel: one job of the pool
// per call (x converted to bf16, then the columns), no per-shape primitive to build, batch
// invariant. Columns are spread over the pool's threads in 64-column chunks taken dynamically.
#pragma once

#include "backend/cpu/gemm_problem.h"
#include "core/thread_pool.h"
#include "moe/status.h"

namespace moe::cpu {

// Whether bf16_matmul can run `p` on this CPU (AVX512-BF16 present, bf16 weights, M <= max_rows).
bool bf16_matmul_applies(const GemmProblem& p, int64_t max_rows);

// Runs `p`; bitwise deterministic and independent of the pool size. Where panel_route_onednn(route,
// M), packed panels with K % 32 == 0 go through oneDNN on each thread (onednn_panels.h); its
// errors come back here.
Status bf16_matmul(const GemmProblem& p, ThreadPool* pool, PanelRoute route = PanelRoute::kOwn);

// One column range of one product, as every bf16 product on the pool computes it (this file's
// and the experts'): with `onednn`, a matrix in panels with K % 32 == 0 goes to oneDNN
// (onednn_panel_block), anything else to our kernels (bf16_block). Arguments as bf16_block's;
// oneDNN's errors come back (y may then be partly written).
Status bf16_routed_block(const uint16_t* x, int64_t ldx, int64_t rows, const CpuMatrix& w, int64_t n_begin,
                         int64_t n_end, float* y, int64_t ldy, bool accumulate, bool onednn,
                         bool prefetch_following = false);

}  // namespace moe::cpu
