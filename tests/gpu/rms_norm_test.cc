// rms_norm on the CUDA backend against moe::ref::rms_norm (row strides, in place, determinism).
#include <gtest/gtest.h>

#include <vector>

#include "gpu_test_util.h"
#include "ops/ops.h"

namespace moe::gpu_test {
namespace {

using CudaRmsNormTest = CudaTest;

// f32 sums in a different order than the double reference: a few ulps.
constexpr double kAtol = 1e-6;
constexpr double kRtol = 2e-5;

TEST_F(CudaRmsNormTest, MatchesReferenceWithRowStrides) {
    const float eps = 1e-5f;
    for (int64_t rows : {1, 19}) {
        for (int64_t dim : {1, 19, 111, 1000, 4097}) {
            const uint32_t seed = static_cast<uint32_t>(rows * 10007 + dim);
            SCOPED_TRACE(::testing::Message() << "R=" << rows << " D=" << dim << " seed=" << seed);
            const int64_t x_stride = dim + 3;
            const int64_t out_stride = dim + 5;
            std::vector<float> x = random_floats(static_cast<size_t>(rows * x_stride), seed, -3.0f, 3.0f);
            std::vector<float> w = random_floats(static_cast<size_t>(dim), seed + 1, 0.5f, 1.5f);
            std::vector<float> want(static_cast<size_t>(rows * out_stride), 0.0f);
            RmsNormArgs host{
                .x = view2d(x.data(), DType::kF32, rows, dim, x_stride),
                .weight = TensorView::make(w.data(), DType::kF32, {dim}),
                .out = view2d(want.data(), DType::kF32, rows, dim, out_stride),
                .eps = eps,
            };
            MOE_ASSERT_OK(ref::rms_norm(host));

            std::vector<float> got(want.size(), 0.0f);
            const TensorView got_view = view2d(got.data(), DType::kF32, rows, dim, out_stride);
            MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_x, to_device(be(), host.x));
            MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_w, to_device(be(), host.weight));
            MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_out, to_device(be(), got_view));
            const RmsNormArgs dev{.x = d_x.view, .weight = d_w.view, .out = d_out.view, .eps = eps};
            MOE_ASSERT_OK(ops::run(be(), dev));
            MOE_ASSERT_OK(to_host(be(), d_out, got_view));
            EXPECT_TRUE(all_close(packed_rows(got, rows, dim, out_stride), packed_rows(want, rows, dim, out_stride),
                                  kAtol, kRtol));

            // Run again: bitwise the same.
            std::vector<float> again(want.size(), 0.0f);
            MOE_ASSERT_OK(ops::run(be(), dev));
            MOE_ASSERT_OK(to_host(be(), d_out, view2d(again.data(), DType::kF32, rows, dim, out_stride)));
            EXPECT_TRUE(
                bitwise_equal(packed_rows(again, rows, dim, out_stride), packed_rows(got, rows, dim, out_stride)));
        }
    }
}

TEST_F(CudaRmsNormTest, InPlace) {
    const int64_t rows = 19;
    const int64_t dim = 111;
    std::vector<float> x = random_floats(static_cast<size_t>(rows * dim), 77, -2.0f, 2.0f);
    std::vector<float> w = random_floats(static_cast<size_t>(dim), 78, 0.5f, 1.5f);
    std::vector<float> want = x;
    RmsNormArgs host{
        .x = TensorView::make(want.data(), DType::kF32, {rows, dim}),
        .weight = TensorView::make(w.data(), DType::kF32, {dim}),
        .out = TensorView::make(want.data(), DType::kF32, {rows, dim}),
        .eps = 1e-6f,
    };
    MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_x, to_device(be(), host.x));  // before the reference overwrites it
    MOE_ASSERT_OK(ref::rms_norm(host));
    MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_w, to_device(be(), host.weight));
    MOE_ASSERT_OK(ops::run(be(), RmsNormArgs{.x = d_x.view, .weight = d_w.view, .out = d_x.view, .eps = 1e-6f}));
    std::vector<float> got(want.size(), 0.0f);
    MOE_ASSERT_OK(to_host(be(), d_x, TensorView::make(got.data(), DType::kF32, {rows, dim})));
    EXPECT_TRUE(all_close(got, want, kAtol, kRtol));
}

}  // namespace
}  // namespace moe::gpu_test
