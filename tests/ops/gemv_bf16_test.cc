// The bf16 tiles (gemv_bf16.h, bf16_tiles.h) against the naive reference: exact on small
// integers, within bf16 rounding of x on random floats; decode and prefill row counts (tile
// remainders, row blocks), odd N and K (K tails), bias and accumulate; and batch invariance.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_features.h"
#include "backend/cpu/gemv_bf16.h"
#include "ops/op_test_util.h"

namespace moe::testing {
namespace {

struct Case {
    int64_t m, n, k;
    bool bias, accumulate;
};

void run_case(Backend& be, const Case& c, bool integers, uint32_t seed) {
    SCOPED_TRACE("m=" + std::to_string(c.m) + " n=" + std::to_string(c.n) + " k=" + std::to_string(c.k) +
                 " bias=" + std::to_string(c.bias) + " acc=" + std::to_string(c.accumulate) + " seed=" + std::to_string(seed));
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> small(-4, 4);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    auto value = [&] { return integers ? static_cast<float>(small(rng)) : normal(rng); };
    std::vector<float> x(static_cast<size_t>(c.m * c.k)), bias(static_cast<size_t>(c.n)), y0(static_cast<size_t>(c.m * c.n));
    std::vector<uint16_t> w(static_cast<size_t>(c.n * c.k));
    for (auto& v : x) v = value();
    // The reference sees x already rounded to bf16, as the kernel does.
    for (auto& v : x) v = bf16_to_f32(f32_to_bf16(v));
    for (auto& v : w) v = f32_to_bf16(value());
    for (auto& v : bias) v = value();
    for (auto& v : y0) v = value();
    std::vector<float> y = y0, y_ref = y0;
    GemmArgs a{.x = TensorView::make(x.data(), DType::kF32, {c.m, c.k}),
               .w = TensorView::make(w.data(), DType::kBF16, {c.n, c.k}),
               .bias = c.bias ? TensorView::make(bias.data(), DType::kF32, {c.n}) : TensorView{},
               .y = TensorView::make(y.data(), DType::kF32, {c.m, c.n}),
               .accumulate = c.accumulate};
    ASSERT_TRUE(ops::run(be, a).ok());
    std::vector<float> first = y;
    // determinism: the same call again gives the same bits
    y = y0;
    ASSERT_TRUE(ops::run(be, a).ok());
    ASSERT_EQ(std::memcmp(first.data(), y.data(), y.size() * 4), 0);
    GemmArgs r = a;
    r.y = TensorView::make(y_ref.data(), DType::kF32, {c.m, c.n});
    ASSERT_TRUE(ref::gemm(r).ok());
    for (size_t i = 0; i < y.size(); ++i) {
        if (integers) {
            ASSERT_EQ(y[i], y_ref[i]) << "element " << i;
        } else {
            ASSERT_NEAR(y[i], y_ref[i], 1e-4 * (1 + std::abs(y_ref[i])) * std::sqrt(static_cast<double>(c.k))) << "element " << i;
        }
    }
}

TEST(CpuGemvBf16, MatchesTheReferenceForEveryRowCountAndKTail) {
    if (!cpu::cpu_features().avx512_bf16) GTEST_SKIP() << "this CPU has no AVX512-BF16: the GEMV path is not used";
    auto be = make_cpu_backend({.num_threads = 2});
    cpu::as_cpu(*be).gemm_engine().set_bf16_tiles_max_rows(INT64_MAX);
    uint32_t seed = 1;
    for (int64_t m : {1, 2, 3, 4, 5, 6, 7, 9, 66, 131})
        for (int64_t n : {1, 5, 19, 111})
            for (int64_t k : {1, 31, 32, 77, 130})
                for (bool bias : {false, true})
                    for (bool acc : {false, true}) {
                        run_case(*be, {m, n, k, bias, acc}, true, seed++);
                        run_case(*be, {m, n, k, bias, acc}, false, seed++);
                    }
}

// A row's result does not depend on which other rows share the call, nor on the thread count.
TEST(CpuGemvBf16, RowsAreBatchAndThreadInvariant) {
    if (!cpu::cpu_features().avx512_bf16) GTEST_SKIP() << "this CPU has no AVX512-BF16: the tiles are not used";
    const int64_t m = 70, n = 37, k = 333;
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> x(static_cast<size_t>(m * k));
    std::vector<uint16_t> w(static_cast<size_t>(n * k));
    for (auto& v : x) v = normal(rng);
    for (auto& v : w) v = f32_to_bf16(normal(rng));
    auto run = [&](int threads, int64_t rows, int64_t first_row) {
        auto be = make_cpu_backend({.num_threads = threads});
        cpu::as_cpu(*be).gemm_engine().set_bf16_tiles_max_rows(INT64_MAX);
        std::vector<float> y(static_cast<size_t>(rows * n));
        GemmArgs a{.x = TensorView::make(x.data() + first_row * k, DType::kF32, {rows, k}),
                   .w = TensorView::make(w.data(), DType::kBF16, {n, k}),
                   .bias = {},
                   .y = TensorView::make(y.data(), DType::kF32, {rows, n})};
        EXPECT_TRUE(ops::run(*be, a).ok());
        return y;
    };
    const std::vector<float> all = run(2, m, 0);
    for (int threads : {1, 2, 3}) {
        for (int64_t rows : {1, 2, 3, 4, 5, 65}) {
            const int64_t first = m - rows;
            const std::vector<float> part = run(threads, rows, first);
            ASSERT_EQ(std::memcmp(part.data(), all.data() + first * n, part.size() * sizeof(float)), 0)
                << "threads " << threads << ", rows " << rows;
        }
    }
}

}  // namespace
}  // namespace moe::testing
