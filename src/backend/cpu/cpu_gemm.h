// The GEMM engine behind the gemm op and the expert MLPs: the one dispatcher of a product to its
// kernels (by weight dtype, layout and row count). The kernels' headers point down to
// gemm_problem.h, never back here.
//   f32 weights  -> N <= 512 (routers, gates): our AVX-512 kernel on the pool (gemm_f32_narrow.h);
//                   wider: OpenBLAS cblas_sgemm
//   bf16 weights -> with AVX512-BF16 (x rounded to bf16, f32 accumulation and output): our
//                   kernels on the pool (bf16_matmul.h), over the packed column panels when the
//                   matrix has them (bf16_panels.h), else its checkpoint layout (bf16_tiles.h);
//                   with PanelRoute::kOnednn, oneDNN reads the panels instead, per pool thread
//                   (onednn_panels.h: AMX tiles where present);
//                   row-major matrices without it, or above bf16_tiles_max_rows: oneDNN matmul
//                   (AMX or AVX512-BF16 kernels where present), with primitives cached by shape.
//                   A matrix in panels has no row-major copy: it always takes bf16_matmul.
// If oneDNN cannot build a bf16 matmul on this machine, the weights are widened to f32 in
// panels and go through BLAS instead (slower, same contract).
//
// Determinism: for a fixed thread count, the same inputs give bitwise the same outputs.
// Thread safety: one caller at a time (the backend's rule).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "backend/cpu/gemm_problem.h"
#include "core/thread_pool.h"
#include "moe/backend.h"
#include "moe/cpu_backend.h"
#include "moe/dtype.h"
#include "moe/status.h"

namespace moe::cpu {

class GemmEngine {
public:
    static constexpr int64_t kDefaultTilesMaxRows = INT64_MAX;

    GemmEngine(int num_threads, ThreadPool* pool);
    ~GemmEngine();
    GemmEngine(const GemmEngine&) = delete;
    GemmEngine& operator=(const GemmEngine&) = delete;

    Status run(const GemmProblem& p);

    // The oneDNN implementation picked for the last bf16 problem ("brg:avx512_core_amx", ...),
    // or "blas-fallback". For benchmarks and logs.
    const std::string& last_bf16_impl() const;
    // oneDNN primitives built so far (one per distinct shape / bias / accumulate / ldy).
    size_t cached_primitives() const;
    // bf16 problems with M <= this many rows go to our AVX512-BF16 tiles (bf16_matmul.h), larger
    // ones to oneDNN. benchmarks/gemm_decode_bench on the 2-core EPYC (AVX512-BF16, no AMX):
    // tiles 1.3x oneDNN at M = 1-2 (25 vs 19 GB/s), 1.1x at M = 8-16, even at M = 64, 0.75-0.85x
    // from M = 128 up (oneDNN's packed-B brgemm wins once weights are reused enough). The
    // default is still every M: oneDNN runs on OpenMP's team, whose threads (spinning under
    // OMP_WAIT_POLICY=active) fight the backend's own pool for the cores; a whole moe-s prefill
    // was faster on the tiles alone. 0 sends everything to oneDNN. For A/B benchmarks and tests.
    void set_bf16_tiles_max_rows(int64_t rows) { tiles_max_rows_ = rows; }
    int64_t bf16_tiles_max_rows() const { return tiles_max_rows_; }
    // kOnednn / kOnednnPrefill: products over packed panels (every row count / from
    // kOnednnPrefillMinRows rows; matrices with K % 32 == 0) go to oneDNN on each pool thread
    // (onednn_panels.h); the rest stays on our kernels.
    void set_panel_route(PanelRoute route) { route_ = route; }
    PanelRoute panel_route() const { return route_; }

private:
    Status run_f32(const GemmProblem& p);
    Status run_bf16(const GemmProblem& p);
    Status run_bf16_fallback(const GemmProblem& p);

    struct Dnnl;
    int num_threads_;
    ThreadPool* pool_;
    std::unique_ptr<Dnnl> dnnl_;
    int64_t tiles_max_rows_ = kDefaultTilesMaxRows;
    PanelRoute route_ = PanelRoute::kOwn;
};

}  // namespace moe::cpu
