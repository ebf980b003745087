// oneDNN over the packed panels (onednn_panels.h), the route to AMX: the plain panels read in
// place as oneDNN's BA16a64b2a, the 12-bit form decoded first. Checked against a double
// reference of the same bf16 products, for batch and column-range invariance (bitwise), through
// the gemm and moe_experts ops of a backend with CpuMatmul::kOnednn, and for which route each
// CpuMatmul choice takes on this CPU. Without AMX oneDNN runs its AVX512-BF16 brgemm; on a CPU
// with AMX the same tests run its AMX kernels, through the one fixed shape (onednn_panels.h).
#include "backend/cpu/onednn_panels.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "backend/cpu/bf16_panels.h"
#include "backend/cpu/bf16_tiles.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_features.h"
#include "ops/op_test_util.h"
#include "ops/panels12_test_util.h"

namespace moe::testing {
namespace {

bool skip_without_bf16() {
    return !cpu::cpu_features().avx512_bf16;
}
#define MOE_SKIP_WITHOUT_BF16() \
    if (skip_without_bf16()) GTEST_SKIP() << "this CPU has no AVX512-BF16: no packed panels, no oneDNN route"

// A bf16 matrix (N(0, sigma) with a few large outliers, so the 12-bit form keeps exceptions),
// bf16 rows of x padded as the kernels' callers pad them, and both packed forms.
struct Problem {
    int64_t n, k, rows, ldx;
    std::vector<uint16_t> w, x;
    std::vector<uint16_t> panels;
    Packed12 panels12;

    // strided: x rows further apart than K (the callers' rows are dense when K % 32 == 0, but
    // the function takes any ldx).
    Problem(int64_t n_, int64_t k_, int64_t rows_, uint32_t seed, bool strided = false) : n(n_), k(k_), rows(rows_) {
        ldx = strided ? k + 32 : k;
        std::mt19937 rng(seed);
        std::normal_distribution<float> normal(0.0f, 0.02f);
        std::uniform_int_distribution<int> pick(0, 999);
        w.resize(static_cast<size_t>(n * k));
        for (auto& v : w) v = f32_to_bf16(pick(rng) < 2 ? normal(rng) * 3000.0f : normal(rng));
        std::normal_distribution<float> xs(0.0f, 1.0f);
        x.assign(static_cast<size_t>(rows * ldx), 0);
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = 0; c < k; ++c) x[static_cast<size_t>(r * ldx + c)] = f32_to_bf16(xs(rng));
        panels.resize(static_cast<size_t>(cpu::bf16_panels_elems(n, k)));
        cpu::pack_bf16_panels(w.data(), n, k, panels.data());
        panels12 = pack_panels12(w.data(), n, k);
        if (n * k >= 64 * 96)
            EXPECT_GT(cpu::bf16_panels12_exceptions(panels12.data()), 0) << "test bug: no exceptions to decode";
    }
    cpu::CpuMatrix matrix(cpu::CpuLayout layout) const {
        return cpu::CpuMatrix{
            .layout = layout,
            .dtype = DType::kBF16,
            .n = n,
            .k = k,
            .data = layout == cpu::CpuLayout::kPanels ? static_cast<const void*>(panels.data()) : panels12.data()};
    }
    // rows [r0, r0 + count) x columns [c0, c1), y0 added first when accumulating.
    std::vector<float> onednn(cpu::CpuLayout layout, int64_t r0, int64_t count, int64_t c0, int64_t c1, bool accumulate,
                              const std::vector<float>& y0 = {}) const {
        std::vector<float> y = accumulate ? y0 : std::vector<float>(static_cast<size_t>(count * (c1 - c0)), NAN);
        EXPECT_TRUE(cpu::onednn_panel_block(x.data() + r0 * ldx, ldx, count, matrix(layout), c0, c1, y.data(), c1 - c0,
                                            accumulate)
                        .ok());
        return y;
    }
};

// Every element within f32 rounding of the sum of |terms| of the exact product (the order of
// the f32 additions is oneDNN's): measured up to 2e-6 at K = 2048, limit 4 sqrt(K) 2^-24
// (1.1e-5 there). A misread layout or a lost exception is off by O(1).
TEST(OnednnPanels, MatchesTheExactProductOnBothLayouts) {
    MOE_SKIP_WITHOUT_BF16();
    const int64_t refused = cpu::onednn_panels_refused();
    const int64_t calls = cpu::onednn_panels_calls();
    uint32_t seed = 1;
    for (int64_t k : {32, 96, 2048})
        for (int64_t n : {64, 200})
            for (int64_t rows : {1, 5, 70})
                for (cpu::CpuLayout layout : {cpu::CpuLayout::kPanels, cpu::CpuLayout::kPanels12})
                    for (bool accumulate : {false, true}) {
                        const bool strided = seed % 3 == 0;
                        SCOPED_TRACE("k=" + std::to_string(k) + " n=" + std::to_string(n) +
                                     " rows=" + std::to_string(rows) + " " + layout_name(layout) +
                                     (accumulate ? " accumulate" : "") + (strided ? " strided" : ""));
                        const Problem p(n, k, rows, seed++, strided);
                        std::vector<float> y0(static_cast<size_t>(rows * n));
                        for (size_t i = 0; i < y0.size(); ++i) y0[i] = static_cast<float>(i % 7) - 3.0f;
                        const std::vector<float> y = p.onednn(layout, 0, rows, 0, n, accumulate, y0);
                        double worst = 0;
                        for (int64_t r = 0; r < rows; ++r)
                            for (int64_t c = 0; c < n; ++c) {
                                double exact = accumulate ? y0[static_cast<size_t>(r * n + c)] : 0.0;
                                double mag = std::abs(exact);
                                for (int64_t i = 0; i < k; ++i) {
                                    const double t =
                                        static_cast<double>(bf16_to_f32(p.x[static_cast<size_t>(r * p.ldx + i)])) *
                                        bf16_to_f32(p.w[static_cast<size_t>(c * k + i)]);
                                    exact += t;
                                    mag += std::abs(t);
                                }
                                const double err = std::abs(y[static_cast<size_t>(r * n + c)] - exact) / (mag + 1e-30);
                                worst = std::max(worst, err);
                            }
                        EXPECT_LT(worst, 4 * std::sqrt(static_cast<double>(k)) * std::ldexp(1.0, -24));
                    }
    // Every shape above went through oneDNN, none fell back to our kernels.
    EXPECT_EQ(cpu::onednn_panels_refused(), refused);
    EXPECT_GE(cpu::onednn_panels_calls() - calls, 3 * 2 * 3 * 2 * 2);
}

// A shape oneDNN refuses runs on our kernels: the same bits as bf16_panel_block's (and the 12-bit
// block's), counted.
TEST(OnednnPanels, RefusedShapesRunOnOurKernels) {
    MOE_SKIP_WITHOUT_BF16();
    const Problem p(200, 96, 20, 3);
    for (cpu::CpuLayout layout : {cpu::CpuLayout::kPanels, cpu::CpuLayout::kPanels12}) {
        SCOPED_TRACE(layout_name(layout));
        std::vector<float> ours(static_cast<size_t>(20 * 136), NAN);
        if (layout == cpu::CpuLayout::kPanels)
            cpu::bf16_panel_block(p.x.data(), p.ldx, 20, p.panels.data(), 200, 96, 64, 200, ours.data(), 136, false);
        else
            cpu::bf16_panels12_block(p.x.data(), p.ldx, 20, p.panels12.data(), 64, 200, ours.data(), 136, false);
        const int64_t refused = cpu::onednn_panels_refused();
        const int64_t calls = cpu::onednn_panels_calls();
        cpu::onednn_panels_refuse_for_testing(true);
        const std::vector<float> got = p.onednn(layout, 0, 20, 64, 200, false);
        cpu::onednn_panels_refuse_for_testing(false);
        EXPECT_EQ(cpu::onednn_panels_refused(), refused + 1);
        EXPECT_EQ(cpu::onednn_panels_calls(), calls);
        ASSERT_EQ(std::memcmp(got.data(), ours.data(), ours.size() * sizeof(float)), 0);
    }
}

// A row's bits do not depend on the other rows of the call, nor on the column range a thread
// takes: what makes the route batch invariant when every row count goes through it.
TEST(OnednnPanels, RowsAndColumnRangesGiveTheSameBits) {
    MOE_SKIP_WITHOUT_BF16();
    for (int64_t k : {64, 768, 2048}) {
        const int64_t n = 330, rows = 300;
        const Problem p(n, k, rows, static_cast<uint32_t>(k));
        for (cpu::CpuLayout layout : {cpu::CpuLayout::kPanels, cpu::CpuLayout::kPanels12})
            for (bool accumulate : {false, true}) {
                SCOPED_TRACE("k=" + std::to_string(k) + " " + layout_name(layout) + (accumulate ? " accumulate" : ""));
                std::vector<float> y0(static_cast<size_t>(rows * n));
                for (size_t i = 0; i < y0.size(); ++i) y0[i] = static_cast<float>(i % 11) * 0.25f;
                const std::vector<float> all = p.onednn(layout, 0, rows, 0, n, accumulate, y0);
                for (int64_t count : {1, 2, 7, 16, 17, 64, 100}) {
                    for (int64_t r0 : {int64_t{0}, int64_t{3}, rows - count}) {
                        std::vector<float> part0(static_cast<size_t>(count * n));
                        std::memcpy(part0.data(), y0.data() + r0 * n, part0.size() * sizeof(float));
                        const std::vector<float> part = p.onednn(layout, r0, count, 0, n, accumulate, part0);
                        ASSERT_EQ(std::memcmp(part.data(), all.data() + r0 * n, part.size() * sizeof(float)), 0)
                            << count << " rows from row " << r0;
                    }
                }
                for (auto [c0, c1] : {std::pair<int64_t, int64_t>{64, 128}, {128, 330}, {320, 330}}) {
                    std::vector<float> part0(static_cast<size_t>(rows * (c1 - c0)));
                    for (int64_t r = 0; r < rows; ++r)
                        for (int64_t c = c0; c < c1; ++c)
                            part0[static_cast<size_t>(r * (c1 - c0) + c - c0)] = y0[static_cast<size_t>(r * n + c)];
                    const std::vector<float> part = p.onednn(layout, 0, rows, c0, c1, accumulate, part0);
                    for (int64_t r = 0; r < rows; ++r)
                        ASSERT_EQ(std::memcmp(part.data() + r * (c1 - c0), all.data() + r * n + c0,
                                              static_cast<size_t>(c1 - c0) * sizeof(float)),
                                  0)
                            << "columns [" << c0 << ", " << c1 << "), row " << r;
                }
            }
    }
}

// Row counts vary per call (an expert's tokens): the per-thread cache starts over instead of
// growing without bound. With AMX every call goes through one fixed shape per K (for batch
// invariance, onednn_panels.h): then the 600 row counts add one primitive at most.
TEST(OnednnPanels, PrimitiveCacheStaysBounded) {
    MOE_SKIP_WITHOUT_BF16();
    const Problem p(64, 32, 600, 5);
    const int64_t before = cpu::onednn_panels_cached_primitives();
    int64_t most = 0;
    for (int64_t rows = 1; rows <= 600; ++rows) {
        std::vector<float> y(static_cast<size_t>(rows * 64));
        ASSERT_TRUE(cpu::onednn_panel_block(p.x.data(), p.ldx, rows, p.matrix(cpu::CpuLayout::kPanels), 0, 64, y.data(),
                                            64, false)
                        .ok());
        most = std::max(most, cpu::onednn_panels_cached_primitives());
    }
    if (cpu::cpu_features().amx_bf16) {
        EXPECT_LE(most, before + 1) << "every row count should share the fixed-shape primitive";
        return;
    }
    EXPECT_GE(most, 500) << "the cache should have kept most shapes";
    EXPECT_LE(most, 512);
}

std::unique_ptr<Backend> backend(CpuMatmul matmul, int threads = 2) {
    return make_cpu_backend({.num_threads = threads, .matmul = matmul});
}

// Which route each choice takes here: kOwn always ours, kOnednn oneDNN, kAuto oneDNN for
// prefill-sized products exactly when the CPU has AMX, and then oneDNN must have picked its AMX
// kernels.
TEST(OnednnPanels, BackendResolvesTheChoice) {
    MOE_SKIP_WITHOUT_BF16();
    auto own = backend(CpuMatmul::kOwn);
    EXPECT_EQ(cpu::as_cpu(*own).gemm_engine().panel_route(), cpu::PanelRoute::kOwn);
    EXPECT_EQ(cpu::as_cpu(*own).matmul(), "own AVX512-BF16 kernels");
    auto dnnl = backend(CpuMatmul::kOnednn);
    EXPECT_EQ(cpu::as_cpu(*dnnl).gemm_engine().panel_route(), cpu::PanelRoute::kOnednn);
    EXPECT_EQ(cpu::as_cpu(*dnnl).matmul().rfind("oneDNN brg:", 0), 0u) << cpu::as_cpu(*dnnl).matmul();
    auto automatic = backend(CpuMatmul::kAuto);
    const bool amx = cpu::cpu_features().amx_bf16;
    std::cout << "cpu features: " << cpu::cpu_features().to_string() << "; auto: " << cpu::as_cpu(*automatic).matmul()
              << "\n";
    EXPECT_EQ(cpu::as_cpu(*automatic).gemm_engine().panel_route(),
              amx ? cpu::PanelRoute::kOnednnPrefill : cpu::PanelRoute::kOwn);
    if (amx) EXPECT_NE(cpu::as_cpu(*automatic).matmul().find("amx"), std::string::npos);
    auto prefill = backend(CpuMatmul::kOnednnPrefill);
    EXPECT_EQ(cpu::as_cpu(*prefill).gemm_engine().panel_route(), cpu::PanelRoute::kOnednnPrefill);
    EXPECT_NE(cpu::as_cpu(*prefill).matmul().find("from 64 rows"), std::string::npos) << cpu::as_cpu(*prefill).matmul();
    // Without packed panels there is nothing for oneDNN to read.
    auto unpacked = make_cpu_backend({.num_threads = 2, .pack_weights = false, .matmul = CpuMatmul::kOnednn});
    EXPECT_EQ(cpu::as_cpu(*unpacked).gemm_engine().panel_route(), cpu::PanelRoute::kOwn);
}

// The gemm op on a kOnednn backend: against the own route within f32 rounding, and a row's
// bits whatever the batch and the thread count.
TEST(OnednnPanels, GemmOpIsBatchAndThreadInvariant) {
    MOE_SKIP_WITHOUT_BF16();
    const int64_t m = 70, n = 200, k = 320;
    Rng rng(9);
    auto x = rng.uniform(static_cast<size_t>(m * k), -1, 1);
    std::vector<uint16_t> w = to_bf16(rng.uniform(static_cast<size_t>(n * k), -0.1f, 0.1f));
    for (bool streamed : {false, true}) {
        SCOPED_TRACE(streamed ? "12-bit panels" : "plain panels");
        auto run = [&](CpuMatmul matmul, int threads, int64_t rows, int64_t first) {
            auto be = backend(matmul, threads);
            WeightView wv(TensorView::make(w.data(), DType::kBF16, {n, k}));
            auto packed =
                be->prepare_weight("w", wv.tensor, streamed ? WeightUse::kStreamedMatmul : WeightUse::kMatmul);
            EXPECT_TRUE(packed.ok());
            EXPECT_EQ(cpu_layout(*packed.value()), streamed ? cpu::CpuLayout::kPanels12 : cpu::CpuLayout::kPanels);
            wv.prepared = packed.value().get();
            std::vector<float> poison(static_cast<size_t>(n * k), NAN);
            wv.tensor.data = poison.data();  // only the packed form may be read
            std::vector<float> y(static_cast<size_t>(rows * n));
            GemmArgs a{.x = TensorView::make(x.data() + first * k, DType::kF32, {rows, k}),
                       .w = wv,
                       .bias = {},
                       .y = TensorView::make(y.data(), DType::kF32, {rows, n})};
            EXPECT_TRUE(ops::run(*be, a).ok());
            return y;
        };
        const int64_t calls = cpu::onednn_panels_calls();
        const std::vector<float> all = run(CpuMatmul::kOnednn, 2, m, 0);
        EXPECT_GT(cpu::onednn_panels_calls(), calls) << "the products did not go through oneDNN";
        expect_close(all, run(CpuMatmul::kOwn, 2, m, 0), 1e-5, 1e-5, "oneDNN against our kernels");
        for (int threads : {1, 3})
            for (int64_t rows : {1, 3, 16, 33}) {
                const std::vector<float> part = run(CpuMatmul::kOnednn, threads, rows, m - rows);
                ASSERT_EQ(std::memcmp(part.data(), all.data() + (m - rows) * n, part.size() * sizeof(float)), 0)
                    << "threads " << threads << ", rows " << rows;
            }
    }
}

// The experts on a kOnednn backend (K = hidden and inter both multiples of 32, so every product
// goes to oneDNN): close to our kernels; an expert's first rows get the same bits whether it
// has 3 rows or 45, and whatever the thread count.
TEST(OnednnPanels, ExpertsAreBatchInvariant) {
    MOE_SKIP_WITHOUT_BF16();
    const int64_t hidden = 128, inter = 96, num_experts = 3;
    Rng rng(21);
    std::vector<std::vector<uint16_t>> w[3];
    for (int m = 0; m < 3; ++m)
        for (int64_t e = 0; e < num_experts; ++e)
            w[m].push_back(to_bf16(rng.uniform(static_cast<size_t>(inter * hidden), -0.2f, 0.2f)));
    auto x = rng.uniform(static_cast<size_t>(80 * hidden), -1, 1);
    auto run = [&](CpuMatmul matmul, int threads, const std::vector<int32_t>& offsets) {
        auto be = backend(matmul, threads);
        PackedExperts pe = pack_experts(*be, w, hidden, inter, true);
        return run_packed_experts(*be, pe, x, offsets, hidden);
    };
    const std::vector<int32_t> big = {0, 45, 70, 80};
    const int64_t calls = cpu::onednn_panels_calls();
    const std::vector<float> all = run(CpuMatmul::kOnednn, 2, big);
    EXPECT_GT(cpu::onednn_panels_calls(), calls) << "the products did not go through oneDNN";
    expect_close(all, run(CpuMatmul::kOwn, 2, big), 1e-4, 1e-4, "oneDNN experts against ours");
    // Expert 0 with only its first 3 rows, the others as before.
    const std::vector<int32_t> small = {0, 3, 3, 3};
    for (int threads : {1, 2, 3}) {
        const std::vector<float> few = run(CpuMatmul::kOnednn, threads, small);
        ASSERT_EQ(std::memcmp(few.data(), all.data(), few.size() * sizeof(float)), 0) << "threads " << threads;
    }
}

// kOnednnPrefill: the gemm op sends 64 rows or more to oneDNN and fewer to our kernels, and the
// experts choose per expert by its row count. On a CPU without AMX, oneDNN's AVX512-BF16 brgemm
// sums the plain panels in our kernels' order: bitwise the same results, so the threshold is
// invisible there (measured; with AMX, or with the 12-bit form's exception terms, only the last
// bits may differ).
TEST(OnednnPanels, PrefillRouteSplitsByRowCount) {
    MOE_SKIP_WITHOUT_BF16();
    const int64_t n = 200, k = 320;
    Rng rng(31);
    auto x = rng.uniform(static_cast<size_t>(100 * k), -1, 1);
    std::vector<uint16_t> w = to_bf16(rng.uniform(static_cast<size_t>(n * k), -0.1f, 0.1f));
    for (bool streamed : {false, true}) {
        SCOPED_TRACE(streamed ? "12-bit panels" : "plain panels");
        auto run = [&](CpuMatmul matmul, int64_t rows) {
            auto be = backend(matmul);
            WeightView wv(TensorView::make(w.data(), DType::kBF16, {n, k}));
            auto packed =
                be->prepare_weight("w", wv.tensor, streamed ? WeightUse::kStreamedMatmul : WeightUse::kMatmul);
            EXPECT_TRUE(packed.ok());
            wv.prepared = packed.value().get();
            std::vector<float> y(static_cast<size_t>(rows * n));
            GemmArgs a{.x = TensorView::make(x.data(), DType::kF32, {rows, k}),
                       .w = wv,
                       .bias = {},
                       .y = TensorView::make(y.data(), DType::kF32, {rows, n})};
            EXPECT_TRUE(ops::run(*be, a).ok());
            return y;
        };
        for (int64_t rows : {int64_t{16}, int64_t{63}, kOnednnPrefillMinRows, int64_t{100}}) {
            const int64_t calls = cpu::onednn_panels_calls();
            const std::vector<float> mixed = run(CpuMatmul::kOnednnPrefill, rows);
            EXPECT_EQ(cpu::onednn_panels_calls() > calls, rows >= kOnednnPrefillMinRows) << rows << " rows";
            const std::vector<float> own = run(CpuMatmul::kOwn, rows);
            expect_close(mixed, own, 1e-5, 1e-5, "onednn-prefill against our kernels");
            if (!streamed && !cpu::cpu_features().amx_bf16)
                ASSERT_EQ(std::memcmp(mixed.data(), own.data(), own.size() * sizeof(float)), 0) << rows << " rows";
        }
    }
}

}  // namespace
}  // namespace moe::testing
