// gemm (cuBLAS) on the CUDA backend against moe::ref::gemm: exact on small integers for f32 and
// bf16 weights, bounded error on random floats, row strides, bias and accumulate.
#include <gtest/gtest.h>

#include <cmath>
#include <tuple>
#include <vector>

#include "gpu_test_util.h"
#include "ops/ops.h"

namespace moe::gpu_test {
namespace {

using CudaGemmTest = CudaTest;

struct GemmCase {
    int64_t m, n, k;
    DType w_type;
    bool bias;
    bool accumulate;
    bool small_ints;
};

void run_case(Backend& be, const GemmCase& c, uint32_t seed) {
    SCOPED_TRACE(::testing::Message() << "M=" << c.m << " N=" << c.n << " K=" << c.k << " w=" << dtype_name(c.w_type)
                                      << " bias=" << c.bias << " acc=" << c.accumulate << " ints=" << c.small_ints
                                      << " seed=" << seed);
    const int64_t ld_x = c.k + 3;
    const int64_t ld_y = c.n + 2;
    auto gen = [&](size_t n, uint32_t s) { return c.small_ints ? random_small_ints(n, s) : random_floats(n, s); };
    std::vector<float> x = gen(static_cast<size_t>(c.m * ld_x), seed);
    std::vector<float> w = gen(static_cast<size_t>(c.n * c.k), seed + 1);
    // bf16 weights: the reference reads the same bf16 values the device does.
    if (c.w_type == DType::kBF16)
        for (float& v : w) v = bf16_to_f32(f32_to_bf16(v));
    std::vector<uint16_t> w_bf16 = to_bf16(w);
    std::vector<float> bias = gen(static_cast<size_t>(c.n), seed + 2);
    std::vector<float> y0 = gen(static_cast<size_t>(c.m * ld_y), seed + 3);

    std::vector<float> want = y0;
    void* w_data = c.w_type == DType::kBF16 ? static_cast<void*>(w_bf16.data()) : w.data();
    GemmArgs host{
        .x = view2d(x.data(), DType::kF32, c.m, c.k, ld_x),
        .w = TensorView::make(w_data, c.w_type, {c.n, c.k}),
        .bias = c.bias ? TensorView::make(bias.data(), DType::kF32, {c.n}) : TensorView{},
        .y = view2d(want.data(), DType::kF32, c.m, c.n, ld_y),
        .accumulate = c.accumulate,
    };
    MOE_ASSERT_OK(ref::gemm(host));

    std::vector<float> got = y0;
    const TensorView got_view = view2d(got.data(), DType::kF32, c.m, c.n, ld_y);
    MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_x, to_device(be, host.x));
    MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_w, to_device(be, host.w.tensor));
    DeviceTensor d_bias;
    if (c.bias) {
        MOE_ASSERT_OK_AND_ASSIGN(d_bias, to_device(be, host.bias));
    }
    MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_y, to_device(be, got_view));
    const GemmArgs dev{.x = d_x.view, .w = d_w.view, .bias = d_bias.view, .y = d_y.view, .accumulate = c.accumulate};
    MOE_ASSERT_OK(ops::run(be, dev));
    MOE_ASSERT_OK(to_host(be, d_y, got_view));
    // The padding between rows of y is never written.
    for (int64_t r = 0; r < c.m; ++r)
        for (int64_t j = c.n; j < ld_y; ++j) ASSERT_EQ(got[r * ld_y + j], y0[r * ld_y + j]) << "row " << r;

    const std::vector<float> got_p = packed_rows(got, c.m, c.n, ld_y);
    const std::vector<float> want_p = packed_rows(want, c.m, c.n, ld_y);
    if (c.small_ints) {
        // Every product and partial sum is a small integer: exact in f32 and bf16 alike.
        EXPECT_TRUE(bitwise_equal(got_p, want_p));
        return;
    }
    if (c.w_type == DType::kF32) {
        EXPECT_TRUE(all_close(got_p, want_p, 1e-5 * std::sqrt(static_cast<double>(c.k)), 1e-5));
        return;
    }
    // bf16 weights: x is rounded to bf16 on the device (relative error <= 2^-9 per element), so
    // the bound is per element: 2^-8 * sum_k |x w| (plus f32 summation noise).
    for (int64_t i = 0; i < c.m; ++i) {
        for (int64_t j = 0; j < c.n; ++j) {
            double mag = 0.0;
            for (int64_t kk = 0; kk < c.k; ++kk) mag += std::fabs(x[i * ld_x + kk] * w[j * c.k + kk]);
            const double err = std::fabs(got_p[i * c.n + j] - want_p[i * c.n + j]);
            ASSERT_LE(err, mag / 256.0 + 1e-5) << "y[" << i << ", " << j << "]";
        }
    }
}

TEST_F(CudaGemmTest, SmallIntegersAreExactForF32AndBf16Weights) {
    uint32_t seed = 100;
    for (DType wt : {DType::kF32, DType::kBF16}) {
        for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1},
                               {1, 19, 111},
                               {19, 111, 19},
                               {111, 19, 256},
                               {7, 64, 1000}}) {
            run_case(be(), {m, n, k, wt, false, false, true}, seed++);
            run_case(be(), {m, n, k, wt, true, true, true}, seed++);
        }
    }
}

TEST_F(CudaGemmTest, RandomFloatsWithinTolerance) {
    uint32_t seed = 200;
    for (DType wt : {DType::kF32, DType::kBF16}) {
        run_case(be(), {19, 111, 257, wt, true, false, false}, seed++);
        run_case(be(), {1, 1000, 512, wt, false, true, false}, seed++);
    }
}

TEST_F(CudaGemmTest, DeterministicAcrossRuns) {
    const int64_t m = 19, n = 111, k = 257;
    std::vector<float> x = random_floats(static_cast<size_t>(m * k), 1);
    std::vector<float> w = random_floats(static_cast<size_t>(n * k), 2);
    MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_x, to_device(be(), TensorView::make(x.data(), DType::kF32, {m, k})));
    MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_w, to_device(be(), TensorView::make(w.data(), DType::kF32, {n, k})));
    std::vector<float> y1(static_cast<size_t>(m * n), 0.0f);
    std::vector<float> y2(y1.size(), 1.0f);
    const TensorView y1v = TensorView::make(y1.data(), DType::kF32, {m, n});
    const TensorView y2v = TensorView::make(y2.data(), DType::kF32, {m, n});
    MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_y, to_device(be(), y1v));
    MOE_ASSERT_OK(ops::run(be(), GemmArgs{.x = d_x.view, .w = d_w.view, .y = d_y.view}));
    MOE_ASSERT_OK(to_host(be(), d_y, y1v));
    MOE_ASSERT_OK(ops::run(be(), GemmArgs{.x = d_x.view, .w = d_w.view, .y = d_y.view}));
    MOE_ASSERT_OK(to_host(be(), d_y, y2v));
    EXPECT_TRUE(bitwise_equal(y1, y2));
}

}  // namespace
}  // namespace moe::gpu_test
