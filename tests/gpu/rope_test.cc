// rope on the CUDA backend against moe::ref::rope, at long-context positions too.
#include <gtest/gtest.h>

#include <vector>

#include "gpu_test_util.h"
#include "ops/ops.h"

namespace moe::gpu_test {
namespace {

using CudaRopeTest = CudaTest;

TEST_F(CudaRopeTest, MatchesReferenceIncludingPartialRotaryAndLongPositions) {
    const int64_t tokens = 19;
    const int64_t q_heads = 4;
    const int64_t kv_heads = 2;
    const int64_t head_dim = 64;
    for (int rotary_dim : {64, 32, 2}) {
        for (float theta : {10000.0f, 1000000.0f}) {
            const uint32_t seed = static_cast<uint32_t>(rotary_dim) * 31u + static_cast<uint32_t>(theta);
            SCOPED_TRACE(::testing::Message() << "rotary_dim=" << rotary_dim << " theta=" << theta << " seed=" << seed);
            std::vector<float> q = random_floats(static_cast<size_t>(tokens * q_heads * head_dim), seed);
            std::vector<float> k = random_floats(static_cast<size_t>(tokens * kv_heads * head_dim), seed + 1);
            std::vector<int32_t> pos(static_cast<size_t>(tokens));
            for (int64_t t = 0; t < tokens; ++t) pos[t] = static_cast<int32_t>(t * 2311 % 40000);
            pos[1] = 131071;  // long context: the angle must not lose precision

            std::vector<float> q_ref = q;
            std::vector<float> k_ref = k;
            RopeArgs host{
                .q = TensorView::make(q_ref.data(), DType::kF32, {tokens, q_heads, head_dim}),
                .k = TensorView::make(k_ref.data(), DType::kF32, {tokens, kv_heads, head_dim}),
                .positions = TensorView::make(pos.data(), DType::kI32, {tokens}),
                .theta = theta,
                .rotary_dim = rotary_dim,
            };
            const TensorView q_in = TensorView::make(q.data(), DType::kF32, {tokens, q_heads, head_dim});
            const TensorView k_in = TensorView::make(k.data(), DType::kF32, {tokens, kv_heads, head_dim});
            MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_q, to_device(be(), q_in));
            MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_k, to_device(be(), k_in));
            MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_pos, to_device(be(), host.positions));
            MOE_ASSERT_OK(ref::rope(host));
            MOE_ASSERT_OK(ops::run(
                be(),
                RopeArgs{
                    .q = d_q.view, .k = d_k.view, .positions = d_pos.view, .theta = theta, .rotary_dim = rotary_dim}));
            MOE_ASSERT_OK(to_host(be(), d_q, q_in));
            MOE_ASSERT_OK(to_host(be(), d_k, k_in));
            // Angles in double on both sides; what remains is f32 rounding of cos, sin and products.
            EXPECT_TRUE(all_close(q, q_ref, 1e-6, 1e-5));
            EXPECT_TRUE(all_close(k, k_ref, 1e-6, 1e-5));
        }
    }
}

TEST_F(CudaRopeTest, NegativePositionIsReportedAndLeavesTheTokenAlone) {
    const int64_t tokens = 3;
    const int64_t head_dim = 8;
    std::vector<float> q = random_floats(static_cast<size_t>(tokens * head_dim), 5);
    std::vector<float> k = random_floats(static_cast<size_t>(tokens * head_dim), 6);
    std::vector<int32_t> pos = {0, -1, 4};
    const TensorView q_in = TensorView::make(q.data(), DType::kF32, {tokens, 1, head_dim});
    const TensorView k_in = TensorView::make(k.data(), DType::kF32, {tokens, 1, head_dim});
    const TensorView pos_in = TensorView::make(pos.data(), DType::kI32, {tokens});
    MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_q, to_device(be(), q_in));
    MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_k, to_device(be(), k_in));
    MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_pos, to_device(be(), pos_in));
    const Status s = ops::run(
        be(), RopeArgs{.q = d_q.view, .k = d_k.view, .positions = d_pos.view, .theta = 10000.0f, .rotary_dim = 8});
    EXPECT_EQ(s.code(), StatusCode::kOutOfRange) << s.to_string();
    EXPECT_NE(s.message().find("positions[1] = -1"), std::string::npos) << s.message();
    std::vector<float> q_after(q.size(), 0.0f);
    MOE_ASSERT_OK(to_host(be(), d_q, TensorView::make(q_after.data(), DType::kF32, {tokens, 1, head_dim})));
    for (int64_t i = 0; i < head_dim; ++i) EXPECT_EQ(q_after[head_dim + i], q[head_dim + i]) << i;
}

}  // namespace
}  // namespace moe::gpu_test
