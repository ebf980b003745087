#include "backend/cpu/bf16_matmul.h"

#include <algorithm>
#include <vector>

#include "backend/cpu/bf16_block.h"
#include "backend/cpu/bf16_panels.h"
#include "backend/cpu/bf16_tiles.h"
#include "backend/cpu/onednn_panels.h"

namespace moe::cpu {
namespace {

// Columns per dynamically scheduled chunk (a multiple of kBf16ColGroup; one panel).
constexpr int64_t kChunkCols = 64;
static_assert(kChunkCols % kBf16PanelCols == 0);
// With packed panels and decode batches of 13-64 rows: chunks of 4 panels, so that a panel's
// later row tiles can prefetch the next one (bf16_panel_block), which the same thread then
// takes. Prefill keeps one-panel chunks (compute bound; finer balance between the threads).
constexpr int64_t kPrefetchChunkCols = 4 * kBf16PanelCols;
static_assert(kPrefetchChunkCols % kBf16ColGroup == 0);
// Rows of x converted to bf16 per unit of work.
constexpr int64_t kConvertRows = 8;
// Products with fewer multiply-adds than this run on the calling thread.
constexpr int64_t kMinJobMacs = int64_t{1} << 17;

}  // namespace

Status bf16_routed_block(const uint16_t* x, int64_t ldx, int64_t rows, const CpuMatrix& w, int64_t n_begin,
                         int64_t n_end, float* y, int64_t ldy, bool accumulate, bool onednn, bool prefetch_following) {
    if (onednn && w.panels() && onednn_panels_usable(w.k))
        return onednn_panel_block(x, ldx, rows, w, n_begin, n_end, y, ldy, accumulate);
    bf16_block(x, ldx, rows, w, n_begin, n_end, y, ldy, accumulate, prefetch_following);
    return ok_status();
}

bool bf16_matmul_applies(const GemmProblem& p, int64_t max_rows) {
    return p.w.dtype == DType::kBF16 && p.m >= 1 && p.m <= max_rows && p.k > 0 && bf16_tiles_available();
}

Status bf16_matmul(const GemmProblem& p, ThreadPool* pool, PanelRoute route) {
    const int64_t k_pad = bf16_padded_k(p.k);
    // NOTE: thread_local scratch: the backend is used by one thread at a time, and this keeps
    // the step free of allocation once warmed up.
    thread_local std::vector<uint16_t> xb;
    if (xb.size() < static_cast<size_t>(p.m * k_pad)) xb.resize(static_cast<size_t>(p.m * k_pad));
    // NOTE: plain pointers: a lambda naming the thread_local itself would see the worker
    // thread's own (empty) instance.
    uint16_t* x_bf16 = xb.data();
    const int64_t groups = (p.n + kBf16ColGroup - 1) / kBf16ColGroup;
    // Columns are handed out in chunks from a shared counter, not split in halves: when one
    // core runs slower (a neighbour on the host, a page fault), the other takes more chunks
    // instead of waiting at the end. Each output is still computed whole by one tile call, so
    // results do not depend on who took which chunk.
    const int64_t chunk_cols =
        p.w.panels() && p.m >= kBf16PanelPrefetchMinRows && p.m <= 64 ? kPrefetchChunkCols : kChunkCols;
    // A narrow matrix still gets at least two chunks per thread: K and V projections (256 or 512
    // columns: 4-8 panels) otherwise made one or two chunks, which left a thread idle. Chunks
    // stay whole panels when the weights are packed.
    const int threads = pool != nullptr ? pool->size() : 1;
    const bool onednn = panel_route_onednn(route, p.m) && p.w.panels() && onednn_panels_usable(p.k);
    // oneDNN on AMX computes whole groups of panels: chunks cut on them compute nothing twice.
    const int64_t unit = p.w.panels() ? (onednn ? onednn_panels_align_cols() : kBf16PanelCols) / kBf16ColGroup : 1;
    const int64_t units = (groups + unit - 1) / unit;
    // oneDNN: about two chunks per thread. A call costs ~3 us whatever its size, which on
    // one-panel chunks at decode (a few us of streaming each) cost more than the products.
    const int64_t chunk_groups =
        unit * (onednn ? std::max<int64_t>(1, (units + 2 * threads - 1) / (2 * threads))
                       : std::clamp<int64_t>(units / (2 * threads), 1,
                                             std::max<int64_t>(1, chunk_cols / kBf16ColGroup / unit)));
    const int64_t num_chunks = (groups + chunk_groups - 1) / chunk_groups;
    FirstError error;
    // Phase 0: x's rows to bf16, kConvertRows per unit; phase 1: the chunks of columns, for all
    // rows. The pool takes units dynamically; a chunk starts once every row is converted.
    const int64_t convert_units = (p.m + kConvertRows - 1) / kConvertRows;
    auto convert = [&](int64_t u) {
        const int64_t r0 = u * kConvertRows, r1 = std::min(p.m, r0 + kConvertRows);
        f32_rows_to_bf16(p.x + r0 * p.ldx, p.ldx, r1 - r0, p.k, x_bf16 + r0 * k_pad, k_pad);
    };
    auto chunk = [&](int64_t c) {
        const int64_t n0 = std::min(p.n, c * chunk_groups * kBf16ColGroup);
        const int64_t n1 = std::min(p.n, (c + 1) * chunk_groups * kBf16ColGroup);
        error.keep(bf16_routed_block(x_bf16, k_pad, p.m, p.w, n0, n1, p.y + n0, p.ldy, p.accumulate, onednn));
        if (p.bias != nullptr)
            for (int64_t i = 0; i < p.m; ++i)
                for (int64_t j = n0; j < n1; ++j) p.y[i * p.ldy + j] += p.bias[j];
    };
    // A product too small to pay for a job (a router's 32 x 1024 at decode: ~64 KB streamed,
    // a few microseconds) runs on the calling thread: same chunks, same results.
    const bool worth_a_job = p.m * p.n * p.k >= kMinJobMacs;
    if (pool != nullptr && pool->size() > 1 && groups > 1 && worth_a_job) {
        pool->run_phases({convert_units, num_chunks},
                         [&](int phase, int64_t u) { phase == 0 ? convert(u) : chunk(u); });
    } else {
        for (int64_t u = 0; u < convert_units; ++u) convert(u);
        for (int64_t c = 0; c < num_chunks; ++c) chunk(c);
    }
    return error.take();
}

}  // namespace moe::cpu
