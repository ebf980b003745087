// silu_mul and add on the CUDA backend against their references.
#include <gtest/gtest.h>

#include <limits>
#include <vector>

#include "gpu_test_util.h"
#include "ops/ops.h"

namespace moe::gpu_test {
namespace {

using CudaElementwiseTest = CudaTest;

TEST_F(CudaElementwiseTest, SiluMulMatchesReferenceWithRowStrides) {
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {19, 111}, {3, 1000}}) {
        const uint32_t seed = static_cast<uint32_t>(rows * 1000 + cols);
        SCOPED_TRACE(::testing::Message() << "M=" << rows << " I=" << cols << " seed=" << seed);
        // gate and up as the two halves of one fused [M, 2I] projection: row stride 2I.
        std::vector<float> gate_up = random_floats(static_cast<size_t>(rows * 2 * cols), seed, -8.0f, 8.0f);
        gate_up[0] = -100.0f;  // exp(-v) overflows: silu must still be -0, not NaN
        const TensorView gate = view2d(gate_up.data(), DType::kF32, rows, cols, 2 * cols);
        const TensorView up = view2d(gate_up.data() + cols, DType::kF32, rows, cols, 2 * cols);
        std::vector<float> want(static_cast<size_t>(rows * cols), 0.0f);
        const TensorView want_v = TensorView::make(want.data(), DType::kF32, {rows, cols});
        MOE_ASSERT_OK(ref::silu_mul(SiluMulArgs{.gate = gate, .up = up, .out = want_v}));

        MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_gu,
                                 to_device(be(), TensorView::make(gate_up.data(), DType::kF32, {rows, 2 * cols})));
        TensorView d_gate = gate;
        TensorView d_up = up;
        d_gate.data = d_gu.view.ptr<float>();
        d_up.data = d_gu.view.ptr<float>() + cols;
        d_gate.device = d_up.device = be().device();
        std::vector<float> got(want.size(), 0.0f);
        const TensorView got_v = TensorView::make(got.data(), DType::kF32, {rows, cols});
        MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_out, to_device(be(), got_v));
        MOE_ASSERT_OK(ops::run(be(), SiluMulArgs{.gate = d_gate, .up = d_up, .out = d_out.view}));
        MOE_ASSERT_OK(to_host(be(), d_out, got_v));
        EXPECT_TRUE(all_close(got, want, 1e-6, 1e-5));
    }
}

TEST_F(CudaElementwiseTest, SiluMulInPlaceOverGate) {
    const int64_t rows = 19, cols = 111;
    std::vector<float> gate = random_floats(static_cast<size_t>(rows * cols), 9, -6.0f, 6.0f);
    std::vector<float> up = random_floats(gate.size(), 10);
    std::vector<float> want(gate.size(), 0.0f);
    const TensorView gate_v = TensorView::make(gate.data(), DType::kF32, {rows, cols});
    const TensorView up_v = TensorView::make(up.data(), DType::kF32, {rows, cols});
    MOE_ASSERT_OK(ref::silu_mul(
        SiluMulArgs{.gate = gate_v, .up = up_v, .out = TensorView::make(want.data(), DType::kF32, {rows, cols})}));
    MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_gate, to_device(be(), gate_v));
    MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_up, to_device(be(), up_v));
    MOE_ASSERT_OK(ops::run(be(), SiluMulArgs{.gate = d_gate.view, .up = d_up.view, .out = d_gate.view}));
    std::vector<float> got(gate.size(), 0.0f);
    MOE_ASSERT_OK(to_host(be(), d_gate, TensorView::make(got.data(), DType::kF32, {rows, cols})));
    EXPECT_TRUE(all_close(got, want, 1e-6, 1e-5));
}

TEST_F(CudaElementwiseTest, AddIsExactAlignedUnalignedAndInPlace) {
    const int64_t rows = 19, cols = 111;
    const size_t n = static_cast<size_t>(rows * cols);
    std::vector<float> a = random_floats(n + 1, 11, -100.0f, 100.0f);
    std::vector<float> b = random_floats(n + 1, 12, -100.0f, 100.0f);
    a[5] = std::numeric_limits<float>::infinity();
    std::vector<float> want(n, 0.0f);
    MOE_ASSERT_OK(ref::add(AddArgs{.a = TensorView::make(a.data(), DType::kF32, {rows, cols}),
                                   .b = TensorView::make(b.data(), DType::kF32, {rows, cols}),
                                   .out = TensorView::make(want.data(), DType::kF32, {rows, cols})}));
    // The device buffers hold one extra leading element; offset 0 takes the float4 path,
    // offset 1 (4-byte aligned only) the scalar one.
    MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_a,
                             to_device(be(), TensorView::make(a.data(), DType::kF32, {rows * cols + 1})));
    MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_b,
                             to_device(be(), TensorView::make(b.data(), DType::kF32, {rows * cols + 1})));
    std::vector<float> zeros(n + 1, 0.0f);
    MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_out,
                             to_device(be(), TensorView::make(zeros.data(), DType::kF32, {rows * cols + 1})));
    for (int offset : {0, 1}) {
        SCOPED_TRACE(::testing::Message() << "offset " << offset);
        std::vector<float> want_o(n, 0.0f);
        for (size_t i = 0; i < n; ++i) want_o[i] = a[i + offset] + b[i + offset];
        if (offset == 0) EXPECT_TRUE(bitwise_equal(want_o, want));  // the reference agrees with f32 addition
        auto dev = [&](const DeviceTensor& t) {
            return TensorView::make(t.view.ptr<float>() + offset, DType::kF32, {rows, cols}, be().device());
        };
        MOE_ASSERT_OK(ops::run(be(), AddArgs{.a = dev(d_a), .b = dev(d_b), .out = dev(d_out)}));
        std::vector<float> got(n + 1, 0.0f);
        MOE_ASSERT_OK(to_host(be(), d_out, TensorView::make(got.data(), DType::kF32, {rows * cols + 1})));
        EXPECT_TRUE(bitwise_equal(std::vector<float>(got.begin() + offset, got.begin() + offset + n), want_o));
    }
    // In place: a += b, over the whole buffers as one [1, n + 1] row.
    auto whole = [&](const DeviceTensor& t) {
        return TensorView::make(t.view.data, DType::kF32, {1, rows * cols + 1}, be().device());
    };
    MOE_ASSERT_OK(ops::run(be(), AddArgs{.a = whole(d_a), .b = whole(d_b), .out = whole(d_a)}));
    std::vector<float> got(n + 1, 0.0f);
    MOE_ASSERT_OK(to_host(be(), d_a, TensorView::make(got.data(), DType::kF32, {rows * cols + 1})));
    for (size_t i = 0; i <= n; ++i) ASSERT_EQ(got[i], a[i] + b[i]) << i;
}

}  // namespace
}  // namespace moe::gpu_test
