// The 12-bit panels (bf16_panels.h) for streamed expert weights: lossless (they decode to the
// plain panels bit for bit, exceptions included), smaller, and their kernel computes what the
// plain panels' kernel computes up to the f32 order of the exception terms, with the same bits
// for a row whatever the other rows (batch invariant).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>

#include "backend/cpu/bf16_panels.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_features.h"
#include "ops/op_test_util.h"
#include "ops/panels12_test_util.h"

namespace moe::testing {
namespace {

// Weights ~ N(0, 0.05) in bf16; `outliers` of every 1000 are +-(100 .. 10000) or a special value,
// whose high bytes are rare: they become exceptions.
std::vector<uint16_t> weights(int64_t n, int64_t k, int outliers, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 0.05f);
    std::uniform_int_distribution<int> per_mille(0, 999);
    std::uniform_real_distribution<float> big(100.0f, 10000.0f);
    const uint16_t specials[] = {0x8000 /* -0 */, 0x0001 /* subnormal */, 0x0000};
    std::vector<uint16_t> w(static_cast<size_t>(n * k));
    for (size_t i = 0; i < w.size(); ++i) {
        w[i] = f32_to_bf16(normal(rng));
        if (per_mille(rng) < outliers) w[i] = i % 7 == 0 ? specials[i % 3] : f32_to_bf16(i % 2 ? big(rng) : -big(rng));
    }
    return w;
}

TEST(CpuPanels12, DecodesToThePlainPanelsBitForBit) {
    if (!cpu::cpu_features().avx512_bf16) GTEST_SKIP() << "this CPU has no AVX512-BF16: the panels are not used";
    struct Shape {
        int64_t n, k;
        int outliers;
    };
    for (const Shape s :
         {Shape{64, 40, 0}, Shape{100, 33, 5}, Shape{130, 1, 20}, Shape{1, 7, 0}, Shape{192, 256, 50}}) {
        SCOPED_TRACE("n=" + std::to_string(s.n) + " k=" + std::to_string(s.k) +
                     " outliers=" + std::to_string(s.outliers));
        const auto w = weights(s.n, s.k, s.outliers, static_cast<uint32_t>(s.n * 31 + s.k));
        std::vector<uint16_t> plain(static_cast<size_t>(cpu::bf16_panels_elems(s.n, s.k)));
        cpu::pack_bf16_panels(w.data(), s.n, s.k, plain.data());
        const auto packed = pack_panels12(w.data(), s.n, s.k);
        std::vector<uint16_t> decoded(plain.size(), 0xffff);
        cpu::unpack_bf16_panels12(packed.data(), decoded.data());
        for (size_t i = 0; i < plain.size(); ++i) ASSERT_EQ(decoded[i], plain[i]) << "element " << i;
        if (s.n * s.k > 10000) EXPECT_GT(cpu::bf16_panels12_exceptions(packed.data()), 0);
    }
}

TEST(CpuPanels12, ThreeQuartersOfThePlainBytesOnClusteredExponents) {
    const int64_t n = 512, k = 1024;
    const auto w = weights(n, k, 0, 5);
    const cpu::Bf16Panels12Plan plan = cpu::plan_bf16_panels12(w.data(), n, k);
    const double plain = static_cast<double>(cpu::bf16_panels_elems(n, k)) * 2;
    EXPECT_LT(static_cast<double>(plan.bytes) / plain, 0.76);
    EXPECT_EQ(plan.exc_offsets.back(), plan.exceptions);
    EXPECT_LT(plan.exceptions, n * k / 1000) << "N(0, 0.05) weights: under 0.1% exceptions";
}

// The kernel against the plain panels' kernel, for every row count up to 20 (one tile with the
// exceptions added, more with the decoded copy), column ranges that start on any panel and end
// anywhere, with and without accumulate. The outliers (exceptions) are large: a lost or
// misplaced exception moves outputs by far more than the tolerance.
TEST(CpuPanels12, BlockMatchesThePlainPanels) {
    if (!cpu::cpu_features().avx512_bf16) GTEST_SKIP() << "this CPU has no AVX512-BF16: the panels are not used";
    const int64_t n = 200, k = 97;
    const auto w = weights(n, k, 10, 11);
    std::vector<uint16_t> plain(static_cast<size_t>(cpu::bf16_panels_elems(n, k)));
    cpu::pack_bf16_panels(w.data(), n, k, plain.data());
    const auto packed = pack_panels12(w.data(), n, k);
    ASSERT_GT(cpu::bf16_panels12_exceptions(packed.data()), 10);
    const int64_t ldx = 128;  // k padded to an even length (and beyond)
    std::mt19937 rng(3);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (int64_t rows = 1; rows <= 20; ++rows) {
        std::vector<uint16_t> x(static_cast<size_t>(rows * ldx), 0);
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t i = 0; i < k; ++i) x[static_cast<size_t>(r * ldx + i)] = f32_to_bf16(normal(rng));
        for (const auto& [n0, n1] : {std::pair<int64_t, int64_t>{0, n}, {64, 150}, {128, 129}, {192, 200}}) {
            for (bool acc : {false, true}) {
                SCOPED_TRACE("rows=" + std::to_string(rows) + " cols [" + std::to_string(n0) + ", " +
                             std::to_string(n1) + ") acc=" + std::to_string(acc));
                const int64_t ldy = n1 - n0 + 3;
                std::vector<float> y0(static_cast<size_t>(rows * ldy));
                for (auto& v : y0) v = normal(rng);
                std::vector<float> want = y0, got = y0;
                cpu::bf16_panel_block(x.data(), ldx, rows, plain.data(), n, k, n0, n1, want.data(), ldy, acc);
                cpu::bf16_panels12_block(x.data(), ldx, rows, packed.data(), n0, n1, got.data(), ldy, acc);
                for (int64_t r = 0; r < rows; ++r)
                    for (int64_t c = 0; c < ldy; ++c) {
                        const size_t i = static_cast<size_t>(r * ldy + c);
                        if (c >= n1 - n0) {
                            ASSERT_EQ(got[i], y0[i]) << "wrote past the column range: row " << r << " col " << c;
                        } else {
                            ASSERT_NEAR(got[i], want[i], 2e-2 + 1e-5 * std::abs(want[i]))
                                << "row " << r << " col " << c;
                        }
                    }
                // Each row alone: the same bits as within the batch (one tile or the decoded copy).
                for (int64_t r = 0; r < rows; ++r) {
                    std::vector<float> alone(y0.begin() + r * ldy, y0.begin() + (r + 1) * ldy);
                    cpu::bf16_panels12_block(x.data() + r * ldx, ldx, 1, packed.data(), n0, n1, alone.data(), ldy, acc);
                    ASSERT_EQ(std::memcmp(alone.data(), got.data() + r * ldy, sizeof(float) * static_cast<size_t>(ldy)),
                              0)
                        << "row " << r << " alone differs from the batch of " << rows;
                }
            }
        }
    }
}

// The backend hands out the 12-bit form only for streamed matrices (CpuLayout::kPanels12), and not when
// compress_streamed or packing is off, nor for a matrix that would keep more than 1 in 1024 values
// as exceptions.
TEST(CpuPanels12, BackendPacksStreamedMatricesOnly) {
    std::vector<uint16_t> wb = weights(64, 40, 0, 2);
    auto be = make_cpu_backend({.num_threads = 2});
    const WeightUse streamed = WeightUse::kStreamedMatmul;
    auto z = be->prepare_weight("z", TensorView::make(wb.data(), DType::kBF16, {64, 40}), streamed);
    ASSERT_TRUE(z.ok());
    if (!cpu::cpu_features().avx512_bf16) {
        EXPECT_EQ(cpu_layout(*z.value()), cpu::CpuLayout::kRowMajor);
        return;
    }
    EXPECT_EQ(cpu_layout(*z.value()), cpu::CpuLayout::kPanels12);
    auto plain_be = make_cpu_backend({.num_threads = 2, .compress_streamed = false});
    auto p = plain_be->prepare_weight("p", TensorView::make(wb.data(), DType::kBF16, {64, 40}), streamed);
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(cpu_layout(*p.value()), cpu::CpuLayout::kPanels);
    EXPECT_EQ(p.value()->bytes(), static_cast<size_t>(cpu::bf16_panels_elems(64, 40)) * 2);
    // 10 outliers per 1000 values keep ~0.7% as exceptions, 2 per 1000 ~0.15% (above 1 in 1024):
    // plain panels; none, ~0.02%: the 12-bit form.
    for (int outliers : {10, 2, 0}) {
        std::vector<uint16_t> wide = weights(256, 512, outliers, 3);
        const int64_t exceptions = cpu::plan_bf16_panels12(wide.data(), 256, 512).exceptions;
        const bool plain = outliers > 0;
        EXPECT_EQ(exceptions > 256 * 512 / 1024, plain) << exceptions << " exceptions";
        auto q = be->prepare_weight("q", TensorView::make(wide.data(), DType::kBF16, {256, 512}), streamed);
        ASSERT_TRUE(q.ok());
        EXPECT_EQ(cpu_layout(*q.value()), plain ? cpu::CpuLayout::kPanels : cpu::CpuLayout::kPanels12)
            << outliers << " outliers per 1000, " << exceptions << " exceptions";
        if (plain) EXPECT_EQ(q.value()->bytes(), static_cast<size_t>(cpu::bf16_panels_elems(256, 512)) * 2);
    }
    auto off = make_cpu_backend({.num_threads = 2, .pack_weights = false});
    auto none = off->prepare_weight("none", TensorView::make(wb.data(), DType::kBF16, {64, 40}), streamed);
    ASSERT_TRUE(none.ok());
    EXPECT_EQ(cpu_layout(*none.value()), cpu::CpuLayout::kRowMajor);
}

}  // namespace
}  // namespace moe::testing
