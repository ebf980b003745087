// Grouped expert MLP.
//
// bf16 weights on an AVX512-BF16 CPU (the served case): every expert of the layer in ONE region
// of the backend's pool, three phases separated by barriers:
//   1. x_permuted -> bf16 (rows split over the threads);
//   2. for (expert, block of intermediate columns) items: the gate and up products for all of
//      the expert's rows, silu(gate) * up rounded to bf16 into h (fused SwiGLU: gate and up
//      never leave the thread's cache);
//   3. for (expert, block of hidden columns) items: h * down^T into the expert's rows of
//      out_permuted.
// Items are split over the threads by cost (weights streamed + rows x columns), contiguous, so
// each expert's weights are read once per step for all tokens routed to it, and a decode step
// with a few active experts still keeps every thread streaming; a thread done with its part
// takes the others' remaining items from their ends (work stealing), so one slowed thread does
// not hold the rest at the barrier. One region per layer instead
// of one or two per expert matrix: thread wake-ups per step drop from hundreds to a few dozen.
// Each output element is computed by exactly one tile call, so the result does not depend on
// the split (nor on the thread count). The products read each matrix's packed column panels
// (bf16_panels.h; an item is one panel) when the loader made them, in their lossless 12-bit form
// when it prepared them as streamed matrices (CpuLayout::kPanels12: a quarter fewer bytes per
// decode step), else the checkpoint layout. With PanelRoute::kOnednn, oneDNN does the products over the
// panels instead (onednn_panels.h: AMX tiles where present), inside the same items.
//
// f32 weights (or no AVX512-BF16): per expert, GEMMs through the backend's GemmEngine (BLAS
// for f32, oneDNN for bf16), silu * up between.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>
#include <vector>

#include "backend/cpu/bf16_matmul.h"
#include "backend/cpu/bf16_panels.h"
#include "backend/cpu/bf16_tiles.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/onednn_panels.h"
#include "ops/data_checks.h"

namespace moe::cpu {
namespace {

// Output columns per work item: a multiple of kBf16ColGroup; 64 bf16 weight rows of K = 2048
// are 256 KB, within L2 while the item's row blocks pass. The oneDNN route takes 4 panels per
// item: one oneDNN call costs ~3 us whatever its size, which on one 64-column panel at decode
// (~6 us of streaming) left moe-s decode at 0.6x of our kernels.
constexpr int64_t kItemCols = 64;
constexpr int64_t kOnednnItemCols = 256;
static_assert(kItemCols % kBf16PanelCols == 0 && kOnednnItemCols % kBf16PanelCols == 0, "items start on a panel");

// y = x * w[n_begin:n_end]^T over w's packed panels when it has them, else its checkpoint
// layout. A thread's next item is mostly the same matrix's next panel: prefill-sized row counts
// prefetch it (bf16_panel_block's prefetch_following). onednn: packed panels go through oneDNN
// (onednn_panels.h) when their K allows; its errors go to `error`.
void dot(const uint16_t* x, int64_t ldx, int64_t rows, const WeightView& weight, int64_t n_begin, int64_t n_end,
         float* y, int64_t ldy, bool onednn, FirstError& error) {
    error.keep(bf16_routed_block(x, ldx, rows, cpu_matrix(weight), n_begin, n_end, y, ldy, false, onednn, true));
}

// y[r, c] += bias[c] for r < rows, c < cols.
void add_bias_rows(const float* bias, int64_t rows, int64_t cols, float* y, int64_t ldy) {
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) y[r * ldy + c] += bias[c];
}

// Columns [col0, col0 + n) of one row: biases, then the args' activation, rounded to bf16 (the
// clamped SwiGLU and biased experts of gpt-oss; plain SwiGLU takes silu_mul_to_bf16).
void activate_to_bf16(const MoeExpertsArgs& a, size_t e, const float* g, const float* u, int64_t col0, int64_t n,
                      uint16_t* out) {
    const float* bg = a.b_gate.empty() ? nullptr : a.b_gate[e].ptr<const float>() + col0;
    const float* bu = a.b_up.empty() ? nullptr : a.b_up[e].ptr<const float>() + col0;
    for (int64_t c = 0; c < n; ++c) {
        const float gv = g[c] + (bg != nullptr ? bg[c] : 0.0f);
        const float uv = u[c] + (bu != nullptr ? bu[c] : 0.0f);
        out[c] = f32_to_bf16(expert_activation(a.activation, gv, uv, a.swiglu_alpha, a.swiglu_limit));
    }
}

struct Item {
    int32_t expert;
    int32_t col_begin, col_end;
};

// The items of one thread's part, [front, back) in one word: the owner takes from the front,
// a thread that has run out of its own items takes from the back (work stealing), and a
// compare-and-swap on the pair means no item is taken twice.
class ItemRange {
public:
    void reset(int64_t front, int64_t back) {
        v_.store(static_cast<uint64_t>(front) << 32 | static_cast<uint64_t>(back), std::memory_order_relaxed);
    }
    bool take_front(int64_t& item) { return take(item, true); }
    bool take_back(int64_t& item) { return take(item, false); }

private:
    bool take(int64_t& item, bool front) {
        uint64_t v = v_.load(std::memory_order_relaxed);
        for (;;) {
            const uint64_t f = v >> 32, b = v & 0xffffffffu;
            if (f >= b) return false;
            const uint64_t next = front ? (f + 1) << 32 | b : f << 32 | (b - 1);
            if (v_.compare_exchange_weak(v, next, std::memory_order_relaxed)) {
                item = static_cast<int64_t>(front ? f : b - 1);
                return true;
            }
        }
    }
    std::atomic<uint64_t> v_{0};
};

struct Scratch {
    std::vector<uint16_t> xb, hb;
    std::vector<Item> gate_up, down;
    std::vector<int64_t> costs, gate_up_bounds, down_bounds;
    std::unique_ptr<ItemRange[]> gate_up_ranges, down_ranges;
    int ranges = 0;
};

// Thread t of nt runs its own part's items front to back, then takes what is left of the other
// parts from their backs, so a thread slowed down (a neighbour on the host, a page fault) does
// not hold the others at the next barrier.
template <typename Fn>
void run_items(ItemRange* ranges, int parts, int t, int nt, Fn&& fn) {
    const int own = t * parts / nt;  // nt < parts only in a nested call (nt = 1): it takes all
    int64_t i;
    while (ranges[own].take_front(i)) fn(i);
    for (int q = 1; q < parts; ++q)
        while (ranges[(own + q) % parts].take_back(i)) fn(i);
}

// Items over [0, cols) for every expert with rows; costs: weight bytes streamed plus MACs.
void make_items(const int32_t* off, int64_t num_experts, int64_t cols, int64_t k, int64_t matrices, int parts,
                int64_t item_cols, std::vector<Item>& items, std::vector<int64_t>& costs,
                std::vector<int64_t>& bounds) {
    items.clear();
    costs.clear();
    for (int64_t e = 0; e < num_experts; ++e) {
        const int64_t rows = off[e + 1] - off[e];
        if (rows == 0) continue;
        for (int64_t c = 0; c < cols; c += item_cols) {
            const int64_t c1 = std::min(cols, c + item_cols);
            items.push_back({static_cast<int32_t>(e), static_cast<int32_t>(c), static_cast<int32_t>(c1)});
            // NOTE: streaming a weight row costs about as much as 8 rows of x against it once it
            // is in cache (decode is bound by the first, prefill by the second).
            costs.push_back(matrices * (c1 - c) * k * (rows + 8));
        }
    }
    bounds.resize(static_cast<size_t>(parts + 1));
    split_by_cost(costs.data(), static_cast<int64_t>(items.size()), parts, bounds.data());
}

Status moe_experts_bf16(CpuBackend& cpu, const MoeExpertsArgs& a, const int32_t* off, int64_t num_experts,
                        int64_t hidden, int64_t inter, int64_t max_rows) {
    const int64_t total = off[num_experts];
    const int64_t kph = bf16_padded_k(hidden), kpi = bf16_padded_k(inter);
    // NOTE: thread_local on the calling thread (one caller at a time per backend): no
    // allocation per step once the largest step has been seen. Workers get raw pointers.
    thread_local Scratch s;
    if (s.xb.size() < static_cast<size_t>(total * kph)) s.xb.resize(static_cast<size_t>(total * kph));
    if (s.hb.size() < static_cast<size_t>(total * kpi)) s.hb.resize(static_cast<size_t>(total * kpi));
    const int threads = std::max(1, cpu.pool().size());
    // The route is chosen per expert, by its row count (all of an expert's rows take one route).
    const PanelRoute route = cpu.gemm_engine().panel_route();
    const int64_t item_cols = panel_route_onednn(route, max_rows) ? kOnednnItemCols : kItemCols;
    make_items(off, num_experts, inter, hidden, 2, threads, item_cols, s.gate_up, s.costs, s.gate_up_bounds);
    make_items(off, num_experts, hidden, inter, 1, threads, item_cols, s.down, s.costs, s.down_bounds);
    if (s.ranges < threads) {
        s.gate_up_ranges = std::make_unique<ItemRange[]>(static_cast<size_t>(threads));
        s.down_ranges = std::make_unique<ItemRange[]>(static_cast<size_t>(threads));
        s.ranges = threads;
    }
    for (int p = 0; p < threads; ++p) {
        s.gate_up_ranges[static_cast<size_t>(p)].reset(s.gate_up_bounds[static_cast<size_t>(p)],
                                                       s.gate_up_bounds[static_cast<size_t>(p) + 1]);
        s.down_ranges[static_cast<size_t>(p)].reset(s.down_bounds[static_cast<size_t>(p)],
                                                    s.down_bounds[static_cast<size_t>(p) + 1]);
    }
    const bool plain = a.activation == ExpertActivation::kSwiGLU && a.b_gate.empty() && a.b_up.empty();
    ItemRange* gu_ranges = s.gate_up_ranges.get();
    ItemRange* down_ranges = s.down_ranges.get();

    uint16_t* xb = s.xb.data();
    uint16_t* hb = s.hb.data();
    const Item* gate_up = s.gate_up.data();
    const Item* down = s.down.data();
    const float* x = a.x_permuted.ptr<const float>();
    float* out = a.out_permuted.ptr<float>();
    FirstError error;

    auto body = [&](int t, int nt, const ThreadPool::Region* region) {
        // Phase 1: this thread's share of the rows to bf16.
        const int64_t r0 = total * t / nt, r1 = total * (t + 1) / nt;
        f32_rows_to_bf16(x + r0 * hidden, hidden, r1 - r0, hidden, xb + r0 * kph, kph);
        if (region != nullptr) region->barrier();
        // Phase 2: gate, up and SwiGLU per (expert, intermediate block).
        alignas(64) float g[kBf16RowBlock * kOnednnItemCols];
        alignas(64) float u[kBf16RowBlock * kOnednnItemCols];
        run_items(gu_ranges, threads, t, nt, [&](int64_t i) {
            const Item& it = gate_up[i];
            const size_t e = static_cast<size_t>(it.expert);
            const int64_t rows = off[e + 1] - off[e];
            const int64_t cols = it.col_end - it.col_begin;
            const bool onednn = panel_route_onednn(route, rows);
            for (int64_t rb = 0; rb < rows; rb += kBf16RowBlock) {
                const int64_t n = std::min(kBf16RowBlock, rows - rb);
                const uint16_t* xr = xb + (off[e] + rb) * kph;
                dot(xr, kph, n, a.w_gate[e], it.col_begin, it.col_end, g, item_cols, onednn, error);
                dot(xr, kph, n, a.w_up[e], it.col_begin, it.col_end, u, item_cols, onednn, error);
                for (int64_t r = 0; r < n; ++r) {
                    uint16_t* hr = hb + (off[e] + rb + r) * kpi;
                    if (plain) {
                        silu_mul_to_bf16(g + r * item_cols, u + r * item_cols, cols, hr + it.col_begin);
                    } else {
                        activate_to_bf16(a, e, g + r * item_cols, u + r * item_cols, it.col_begin, cols,
                                         hr + it.col_begin);
                    }
                    if (it.col_end == inter)
                        for (int64_t c = inter; c < kpi; ++c) hr[c] = 0;  // the tiles' zero padding
                }
            }
        });
        if (region != nullptr) region->barrier();
        // Phase 3: down per (expert, hidden block), straight into out_permuted.
        run_items(down_ranges, threads, t, nt, [&](int64_t i) {
            const Item& it = down[i];
            const size_t e = static_cast<size_t>(it.expert);
            const int64_t rows = off[e + 1] - off[e];
            dot(hb + off[e] * kpi, kpi, rows, a.w_down[e], it.col_begin, it.col_end,
                out + off[e] * hidden + it.col_begin, hidden, panel_route_onednn(route, rows), error);
            if (!a.b_down.empty())
                add_bias_rows(a.b_down[e].ptr<const float>() + it.col_begin, rows, it.col_end - it.col_begin,
                              out + off[e] * hidden + it.col_begin, hidden);
        });
    };
    if (threads > 1) {
        cpu.pool().run([&](const ThreadPool::Region& r) { body(r.thread(), r.threads(), &r); });
    } else {
        body(0, 1, nullptr);
    }
    return error.take();
}

Status moe_experts_gemm(CpuBackend& cpu, const MoeExpertsArgs& a, const int32_t* off, int64_t num_experts,
                        int64_t hidden, int64_t inter, int64_t max_rows) {
    thread_local std::vector<float> gate, up;  // no allocation per step once warmed up
    if (gate.size() < static_cast<size_t>(max_rows * inter)) {
        gate.resize(static_cast<size_t>(max_rows * inter));
        up.resize(static_cast<size_t>(max_rows * inter));
    }
    // NOTE: plain pointers: a lambda naming the thread_locals would see a worker's own.
    float* gate_buf = gate.data();
    const float* up_buf = up.data();
    for (int64_t e = 0; e < num_experts; ++e) {
        const int64_t rows = off[e + 1] - off[e];
        if (rows == 0) continue;
        const size_t i = static_cast<size_t>(e);
        GemmProblem p;
        p.m = rows;
        p.k = hidden;
        p.n = inter;
        p.x = a.x_permuted.ptr<const float>() + off[e] * hidden;
        p.ldx = hidden;
        p.ldy = inter;
        p.w = cpu_matrix(a.w_gate[i]);
        p.y = gate.data();
        MOE_RETURN_IF_ERROR(cpu.gemm_engine().run(p));
        p.w = cpu_matrix(a.w_up[i]);
        p.y = up.data();
        MOE_RETURN_IF_ERROR(cpu.gemm_engine().run(p));

        const float* bg = a.b_gate.empty() ? nullptr : a.b_gate[i].ptr<const float>();
        const float* bu = a.b_up.empty() ? nullptr : a.b_up[i].ptr<const float>();
        cpu.pool().parallel_for(rows, [&](int64_t begin, int64_t end) {
            for (int64_t r = begin; r < end; ++r)
                for (int64_t c = 0; c < inter; ++c) {
                    const int64_t idx = r * inter + c;
                    const float g = gate_buf[idx] + (bg != nullptr ? bg[c] : 0.0f);
                    const float u = up_buf[idx] + (bu != nullptr ? bu[c] : 0.0f);
                    gate_buf[idx] = expert_activation(a.activation, g, u, a.swiglu_alpha, a.swiglu_limit);
                }
        });

        GemmProblem dn;
        dn.m = rows;
        dn.k = inter;
        dn.n = hidden;
        dn.x = gate.data();
        dn.ldx = inter;
        dn.w = cpu_matrix(a.w_down[i]);
        dn.y = a.out_permuted.ptr<float>() + off[e] * hidden;
        dn.ldy = hidden;
        MOE_RETURN_IF_ERROR(cpu.gemm_engine().run(dn));
        if (!a.b_down.empty()) add_bias_rows(a.b_down[i].ptr<const float>(), rows, hidden, dn.y, hidden);
    }
    return ok_status();
}

}  // namespace

Status moe_experts(Backend& be, const MoeExpertsArgs& a) {
    MOE_RETURN_IF_ERROR(ops::check_moe_experts_data(a));
    CpuBackend& cpu = as_cpu(be);
    const int64_t hidden = a.x_permuted.dim(1);
    const int64_t num_experts = a.expert_offsets.dim(0) - 1;
    const auto* off = a.expert_offsets.ptr<const int32_t>();
    int64_t max_rows = 0, inter = 0;
    bool all_bf16 = true;
    for (int64_t e = 0; e < num_experts; ++e) {
        max_rows = std::max<int64_t>(max_rows, off[e + 1] - off[e]);
        if (off[e + 1] > off[e]) {
            const size_t i = static_cast<size_t>(e);
            inter = a.w_gate[i].dim(0);
            all_bf16 = all_bf16 && a.w_gate[i].dtype() == DType::kBF16 && a.w_up[i].dtype() == DType::kBF16 &&
                       a.w_down[i].dtype() == DType::kBF16;
        }
    }
    if (max_rows == 0) return ok_status();
    if (all_bf16 && bf16_tiles_available() && cpu.gemm_engine().bf16_tiles_max_rows() > 0)
        return moe_experts_bf16(cpu, a, off, num_experts, hidden, inter, max_rows);
    return moe_experts_gemm(cpu, a, off, num_experts, hidden, inter, max_rows);
}

}  // namespace moe::cpu
