#include "backend/cpu/onednn_panels.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <oneapi/dnnl/dnnl.hpp>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "backend/cpu/bf16_block.h"
#include "backend/cpu/bf16_panels.h"
#include "backend/cpu/cpu_features.h"
#include "core/logging.h"

namespace moe::cpu {
namespace {

using dnnl::memory;

// Everything that changes the primitive. oneDNN 2.6's brgemm matmul takes only dense source
// and destination rows (ld == K, ld == N; anything else goes to its reference implementation,
// ~100x slower), so run() gives it dense rows and applies strides and accumulation itself.
struct Key {
    int64_t rows, cols, k;
    bool operator==(const Key&) const = default;
};

struct KeyHash {
    size_t operator()(const Key& key) const {
        return (std::hash<int64_t>()(key.rows) * 1000003u ^ std::hash<int64_t>()(key.cols)) * 1000003u ^
               std::hash<int64_t>()(key.k);
    }
};

struct Entry {
    dnnl::matmul prim;
    memory src, wei, dst, scratch;
    // The arguments for the C API: the C++ execute() builds a map and a vector on every call,
    // two heap allocations a product at decode.
    dnnl_exec_arg_t args[4] = {};
    bool refused = false;  // oneDNN had only its reference matmul, or none, for this shape
};

// Primitives kept per thread. Rows vary per call (an expert's tokens), so the set of shapes
// grows with the traffic seen; past this many the cache starts over (a rebuild is ~0.15 ms).
constexpr size_t kMaxPrimitives = 512;
// Plain panels decoded from the 12-bit form per oneDNN call (~1 MB: within L2 on most cores, and
// enough work per call to hide its ~3 us).
constexpr int64_t kDecodeBytes = int64_t{1} << 20;

struct AlignedFree {
    void operator()(void* p) const { std::free(p); }
};

// A 64-byte aligned buffer that only grows.
struct Buffer {
    std::unique_ptr<uint8_t, AlignedFree> data;
    size_t bytes = 0;
    uint8_t* reserve(size_t want) {
        if (want > bytes) {
            const size_t rounded = (want + 63) / 64 * 64;
            data.reset(static_cast<uint8_t*>(std::aligned_alloc(64, rounded)));
            if (data == nullptr) throw std::bad_alloc();
            bytes = rounded;
        }
        return data.get();
    }
};

struct ThreadState {
    dnnl::engine engine{dnnl::engine::kind::cpu, 0};
    dnnl::stream stream{engine};
    std::unordered_map<Key, Entry, KeyHash> cache;
    Buffer scratch, plain, x_dense, x_pad, y_dense;
};

ThreadState& thread_state() {
    // NOTE: per thread, so pool workers never share a primitive, a scratchpad or a buffer.
    thread_local std::unique_ptr<ThreadState> state;
    if (state == nullptr) state = std::make_unique<ThreadState>();
    return *state;
}

std::atomic<int64_t> g_refused{0};
std::atomic<bool> g_refuse_for_testing{false};

// The matmul over `key.cols` columns of BA16a64b2a panels (dense rows, user scratchpad), or
// nothing with *why set when oneDNN has none for the shape or only its reference one (correct,
// but ~100x slower). Other oneDNN errors are thrown.
std::optional<dnnl::matmul::primitive_desc> panel_matmul_pd(const dnnl::engine& engine, const Key& key,
                                                            std::string* why) {
    const memory::desc src_md({key.rows, key.k}, memory::data_type::bf16, memory::format_tag::ab);
    const memory::desc wei_md({key.k, key.cols}, memory::data_type::bf16, memory::format_tag::BA16a64b2a);
    const memory::desc dst_md({key.rows, key.cols}, memory::data_type::f32, memory::format_tag::ab);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    try {
        dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src_md, wei_md, dst_md), attr, engine);
        const std::string impl = pd.impl_info_str();
        if (impl.rfind("ref", 0) != 0) return pd;
        *why = "only its reference matmul (" + impl + ")";
    } catch (const dnnl::error& e) {
        if (e.status != dnnl_unimplemented) throw;
        *why = "no matmul";
    }
    return std::nullopt;
}

// The primitive for `key`, built on first use. A shape oneDNN refuses is remembered as refused;
// the caller then runs our kernels instead. The probe at backend creation makes that the
// exception, not the rule.
Entry& entry_for(ThreadState& s, const Key& key) {
    auto it = s.cache.find(key);
    if (it != s.cache.end()) return it->second;
    if (s.cache.size() >= kMaxPrimitives) s.cache.clear();
    std::string why;
    if (const auto pd = panel_matmul_pd(s.engine, key, &why)) {
        Entry e{dnnl::matmul(*pd), memory(pd->src_desc(), s.engine, nullptr),
                memory(pd->weights_desc(), s.engine, nullptr), memory(pd->dst_desc(), s.engine, nullptr),
                memory(pd->scratchpad_desc(), s.engine, nullptr)};
        e.args[0] = {DNNL_ARG_SRC, e.src.get()};
        e.args[1] = {DNNL_ARG_WEIGHTS, e.wei.get()};
        e.args[2] = {DNNL_ARG_DST, e.dst.get()};
        e.args[3] = {DNNL_ARG_SCRATCHPAD, e.scratch.get()};
        return s.cache.emplace(key, std::move(e)).first->second;
    }
    if (g_refused.fetch_add(1, std::memory_order_relaxed) == 0)
        log::backend().warn(
            "oneDNN has {} for {} rows x K {} by {} columns of packed panels: our kernels take such "
            "products (further shapes are counted, not logged)",
            why, key.rows, key.k, key.cols);
    Entry refused;
    refused.refused = true;
    return s.cache.emplace(key, std::move(refused)).first->second;
}

std::atomic<int64_t> g_calls{0};

// One oneDNN product through the primitive of `shape`: shape.rows rows of x (at ldx) by
// shape.cols columns of plain panels; y gets the first `rows` (<= shape.rows) rows of the
// result's columns [col0, col0 + cols). False (nothing written) if oneDNN refuses the shape.
bool run(ThreadState& s, const Key& shape, const uint16_t* x, int64_t ldx, int64_t rows, const uint16_t* panels,
         int64_t col0, int64_t cols, float* y, int64_t ldy, bool accumulate) {
    Entry& e = entry_for(s, shape);
    if (e.refused) return false;
    const int64_t k = shape.k;
    if (ldx != k) {
        auto* dense =
            reinterpret_cast<uint16_t*>(s.x_dense.reserve(static_cast<size_t>(shape.rows * k) * sizeof(uint16_t)));
        for (int64_t r = 0; r < shape.rows; ++r)
            std::memcpy(dense + r * k, x + r * ldx, static_cast<size_t>(k) * sizeof(uint16_t));
        x = dense;
    }
    const bool direct = !accumulate && ldy == cols && rows == shape.rows && col0 == 0 && cols == shape.cols;
    float* out =
        direct
            ? y
            : reinterpret_cast<float*>(s.y_dense.reserve(static_cast<size_t>(shape.rows * shape.cols) * sizeof(float)));
    e.src.set_data_handle(const_cast<uint16_t*>(x));
    e.wei.set_data_handle(const_cast<uint16_t*>(panels));
    e.dst.set_data_handle(out);
    e.scratch.set_data_handle(s.scratch.reserve(std::max<size_t>(1, e.scratch.get_desc().get_size())));
    dnnl::error::wrap_c_api(dnnl_primitive_execute(e.prim.get(), s.stream.get(), 4, e.args), "matmul execute");
    dnnl::error::wrap_c_api(dnnl_stream_wait(s.stream.get()), "stream wait");
    g_calls.fetch_add(1, std::memory_order_relaxed);
    if (direct) return true;
    for (int64_t r = 0; r < rows; ++r) {
        float* yr = y + r * ldy;
        const float* o = out + r * shape.cols + col0;
        if (accumulate) {
            for (int64_t c = 0; c < cols; ++c) yr[c] += o[c];
        } else {
            std::memcpy(yr, o, static_cast<size_t>(cols) * sizeof(float));
        }
    }
    return true;
}

// With AMX, oneDNN 2.6 picks its kernels and blockings per shape: its AVX512-BF16 brgemm below
// about 256 outputs (rows x columns), AMX above, and on AMX a split of K into chunks (summed in
// a different order) that changes with the rows and the columns of the call (measured: with K =
// 2048, rows 0-299 of a 300-row call differ from the same rows in calls of 1-297 rows, and
// columns [0, 330) from [0, c) for every c tried). So on AMX every product goes through fixed
// shapes: kFixedRows rows (the last chunk zero padded) by the column group that holds the
// columns, groups of kGroupPanels panels counted from the matrix's first column, the last group
// of a matrix as wide as its panels. Each output is then computed by the same primitive, at the
// same place in it, whatever the call. Measured against one call per range (K 1024-2048, 256
// columns, interleaved medians): 32 rows cost 0-6% on 64-512 rows and 17% on 70 or 100 rows
// (padded to 96 and 128), where 64 rows cost 47% on 70; 16 rows cost ~45% everywhere. 4 panels:
// ~10% faster than one panel per product on prefill shapes.
constexpr int64_t kFixedRows = 32;
constexpr int64_t kGroupPanels = 4;
constexpr int64_t kGroupCols = kGroupPanels * kBf16PanelCols;

bool fixed_shape() {
    return cpu_features().amx_bf16;
}

// The fixed-shape product (fixed_shape()) of x's rows by columns [c0, c1) of a matrix of n
// columns: `panels` holds its plain panels from panel p_first on (p_first <= the first panel of
// c0's group), through the end of c1's group or of the matrix. Groups outer, rows inner: a group
// stays in L2 across the row chunks. False (nothing written) if oneDNN refuses a shape.
bool run_fixed(ThreadState& s, const uint16_t* x, int64_t ldx, int64_t rows, const uint16_t* panels, int64_t p_first,
               int64_t n, int64_t c0, int64_t c1, int64_t k, float* y, int64_t ldy, bool accumulate) {
    const int64_t panel_count = bf16_panel_count(n);
    auto shape_of = [&](int64_t g) {
        return Key{kFixedRows, std::min(kGroupPanels, panel_count - g * kGroupPanels) * kBf16PanelCols, k};
    };
    const int64_t g_first = c0 / kGroupCols, g_last = (c1 - 1) / kGroupCols;
    // Every group but the matrix's last has the full shape.
    if (entry_for(s, shape_of(g_first)).refused || entry_for(s, shape_of(g_last)).refused) return false;
    // Whole chunks of dense rows are read in place; the rest (the last chunk, or every row when
    // x is strided) is copied once per call, dense and zero padded to whole chunks.
    const int64_t in_place = ldx == k ? rows / kFixedRows * kFixedRows : 0;
    const int64_t rest = rows - in_place;
    const int64_t padded = (rest + kFixedRows - 1) / kFixedRows * kFixedRows;
    auto* xp = reinterpret_cast<uint16_t*>(
        s.x_pad.reserve(static_cast<size_t>(std::max<int64_t>(1, padded * k)) * sizeof(uint16_t)));
    for (int64_t r = 0; r < rest; ++r)
        std::memcpy(xp + r * k, x + (in_place + r) * ldx, static_cast<size_t>(k) * sizeof(uint16_t));
    std::memset(xp + rest * k, 0, static_cast<size_t>((padded - rest) * k) * sizeof(uint16_t));
    const int64_t panel_elems = bf16_panels_elems(kBf16PanelCols, k);
    for (int64_t g = g_first; g <= g_last; ++g) {
        const Key shape = shape_of(g);
        const int64_t gc0 = g * kGroupCols;
        const int64_t lo = std::max(c0, gc0), hi = std::min(c1, gc0 + shape.cols);
        const uint16_t* group = panels + (g * kGroupPanels - p_first) * panel_elems;
        for (int64_t r = 0; r < rows; r += kFixedRows) {
            const uint16_t* xr = r < in_place ? x + r * k : xp + (r - in_place) * k;
            run(s, shape, xr, k, std::min(kFixedRows, rows - r), group, lo - gc0, hi - lo, y + r * ldy + (lo - c0), ldy,
                accumulate);
        }
    }
    return true;
}

}  // namespace

StatusOr<std::string> onednn_panels_probe() {
    try {
        std::string why;
        const Key shape = fixed_shape() ? Key{kFixedRows, kGroupCols, 64} : Key{16, 64, 64};
        const auto pd = panel_matmul_pd(thread_state().engine, shape, &why);
        if (!pd) return unimplemented("oneDNN has " + why + " over packed panels here");
        return std::string(pd->impl_info_str());
    } catch (const dnnl::error& e) {
        return unimplemented(std::string("oneDNN cannot build a bf16 matmul over packed panels here: ") + e.what());
    } catch (const std::exception& e) {
        return internal_error(std::string("oneDNN probe: ") + e.what());
    }
}

Status onednn_panel_block(const uint16_t* x, int64_t ldx, int64_t rows, const CpuMatrix& w, int64_t n_begin,
                          int64_t n_end, float* y, int64_t ldy, bool accumulate) {
    const int64_t n = w.n, k = w.k;
    const void* packed = w.data;
    const CpuLayout layout = w.layout;
    n_end = std::min(n_end, n);
    if (rows <= 0 || n_begin >= n_end) return ok_status();
    // oneDNN runs its OpenMP loops on the calling thread alone: the pool has the other cores.
    // Set on every call: GemmEngine::run_bf16 raises it on the thread that calls the backend.
    omp_set_num_threads(1);
    const int64_t panel_elems = bf16_panels_elems(kBf16PanelCols, k);
    if (layout != CpuLayout::kPanels && layout != CpuLayout::kPanels12)
        return internal_error(std::string("onednn_panel_block: a matrix in ") + layout_name(layout) +
                              ", not in panels");
    // Our kernels, for a range oneDNN refused (same contract: x rows padded to
    // bf16_padded_k(k) == k here).
    auto own = [&](int64_t c0, int64_t c1) {
        bf16_block(x, ldx, rows, w, c0, c1, y + (c0 - n_begin), ldy, accumulate);
    };
    if (g_refuse_for_testing.load(std::memory_order_relaxed)) {
        g_refused.fetch_add(1, std::memory_order_relaxed);
        own(n_begin, n_end);
        return ok_status();
    }
    // oneDNN reports errors as exceptions; none may leave this module.
    try {
        ThreadState& s = thread_state();
        if (layout == CpuLayout::kPanels) {
            // One call over the whole range: the panels are contiguous, the last one zero padded
            // past n (as BA16a64b2a pads N to 64).
            const auto* all = static_cast<const uint16_t*>(packed);
            const bool done =
                fixed_shape()
                    ? run_fixed(s, x, ldx, rows, all, 0, n, n_begin, n_end, k, y, ldy, accumulate)
                    : run(s, Key{rows, n_end - n_begin, k}, x, ldx, rows, all + n_begin / kBf16PanelCols * panel_elems,
                          0, n_end - n_begin, y, ldy, accumulate);
            if (!done) own(n_begin, n_end);
            return ok_status();
        }
        const auto* p12 = static_cast<const uint8_t*>(packed);
        const int64_t panel_bytes = panel_elems * static_cast<int64_t>(sizeof(uint16_t));
        if (fixed_shape()) {
            // Whole groups decoded per call, so that run_fixed finds every panel of its groups.
            const int64_t per_call = std::max<int64_t>(1, kDecodeBytes / (kGroupPanels * panel_bytes));
            auto* plain = reinterpret_cast<uint16_t*>(
                s.plain.reserve(static_cast<size_t>(per_call * kGroupPanels * panel_bytes)));
            for (int64_t g = n_begin / kGroupCols; g * kGroupCols < n_end; g += per_call) {
                const int64_t p0 = g * kGroupPanels;
                const int64_t p1 = std::min(bf16_panel_count(n), p0 + per_call * kGroupPanels);
                const int64_t c0 = std::max(n_begin, p0 * kBf16PanelCols);
                const int64_t c1 = std::min(n_end, p1 * kBf16PanelCols);
                unpack_bf16_panels12_range(p12, p0, p1, plain);
                if (!run_fixed(s, x, ldx, rows, plain, p0, n, c0, c1, k, y + (c0 - n_begin), ldy, accumulate))
                    own(c0, c1);
            }
            return ok_status();
        }
        const int64_t per_call = std::max<int64_t>(1, kDecodeBytes / panel_bytes);
        auto* plain = reinterpret_cast<uint16_t*>(s.plain.reserve(static_cast<size_t>(per_call * panel_bytes)));
        for (int64_t p0 = n_begin / kBf16PanelCols; p0 * kBf16PanelCols < n_end; p0 += per_call) {
            const int64_t c0 = p0 * kBf16PanelCols;
            const int64_t c1 = std::min(n_end, c0 + per_call * kBf16PanelCols);
            const Key shape{rows, c1 - c0, k};
            if (entry_for(s, shape).refused) {
                own(c0, c1);
                continue;
            }
            unpack_bf16_panels12_range(p12, p0, bf16_panel_count(c1), plain);
            run(s, shape, x, ldx, rows, plain, 0, c1 - c0, y + (c0 - n_begin), ldy, accumulate);
        }
        return ok_status();
    } catch (const dnnl::error& e) {
        return internal_error(std::string("cpu gemm: oneDNN matmul over packed panels failed: ") + e.what());
    } catch (const std::exception& e) {
        return internal_error(std::string("cpu gemm over packed panels: ") + e.what());
    }
}

int64_t onednn_panels_refused() {
    return g_refused.load(std::memory_order_relaxed);
}

void onednn_panels_refuse_for_testing(bool refuse) {
    g_refuse_for_testing.store(refuse, std::memory_order_relaxed);
}

int64_t onednn_panels_calls() {
    return g_calls.load(std::memory_order_relaxed);
}

int64_t onednn_panels_align_cols() {
    return fixed_shape() ? kGroupCols : kBf16PanelCols;
}

int64_t onednn_panels_cached_primitives() {
    return static_cast<int64_t>(thread_state().cache.size());
}

}  // namespace moe::cpu
