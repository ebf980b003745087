// embedding on the CUDA backend against moe::ref::embedding.
#include <gtest/gtest.h>

#include <vector>

#include "gpu_test_util.h"
#include "ops/ops.h"

namespace moe::gpu_test {
namespace {

using CudaEmbeddingTest = CudaTest;

void run_case(Backend& be, DType table_type, int64_t num_tokens, int64_t vocab, int64_t hidden, uint32_t seed) {
    SCOPED_TRACE(::testing::Message() << dtype_name(table_type) << " T=" << num_tokens << " V=" << vocab
                                      << " H=" << hidden << " seed=" << seed);
    std::vector<float> table_f32 = random_floats(static_cast<size_t>(vocab * hidden), seed);
    std::vector<uint16_t> table_bf16 = to_bf16(table_f32);
    void* table_data = table_type == DType::kBF16 ? static_cast<void*>(table_bf16.data()) : table_f32.data();
    std::vector<int32_t> ids(static_cast<size_t>(num_tokens));
    for (int64_t t = 0; t < num_tokens; ++t) ids[t] = static_cast<int32_t>((t * 7 + seed) % vocab);
    ids[0] = static_cast<int32_t>(vocab - 1);  // the last row: an off-by-one would read past it

    std::vector<float> want(static_cast<size_t>(num_tokens * hidden), -1.0f);
    EmbeddingArgs host{
        .ids = TensorView::make(ids.data(), DType::kI32, {num_tokens}),
        .table = TensorView::make(table_data, table_type, {vocab, hidden}),
        .out = TensorView::make(want.data(), DType::kF32, {num_tokens, hidden}),
    };
    MOE_ASSERT_OK(ref::embedding(host));

    std::vector<float> got(want.size(), -1.0f);
    MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_ids, to_device(be, host.ids));
    MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_table, to_device(be, host.table));
    const TensorView got_view = TensorView::make(got.data(), DType::kF32, {num_tokens, hidden});
    MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_out, to_device(be, got_view));
    MOE_ASSERT_OK(ops::run(be, EmbeddingArgs{.ids = d_ids.view, .table = d_table.view, .out = d_out.view}));
    MOE_ASSERT_OK(to_host(be, d_out, got_view));
    // A copy (bf16 -> f32 is exact): bit-for-bit.
    EXPECT_TRUE(bitwise_equal(got, want));
}

TEST_F(CudaEmbeddingTest, MatchesReferenceOnOddSizes) {
    for (DType dt : {DType::kF32, DType::kBF16}) {
        for (int64_t hidden : {1, 19, 64, 111}) {
            run_case(be(), dt, 1, 111, hidden, 1);
            run_case(be(), dt, 19, 111, hidden, 2);
        }
    }
}

TEST_F(CudaEmbeddingTest, OutOfRangeIdIsReportedLikeTheReference) {
    const int64_t vocab = 19;
    const int64_t hidden = 8;
    std::vector<float> table = random_floats(static_cast<size_t>(vocab * hidden), 3);
    std::vector<int32_t> ids = {0, 5, 19, -3, 2};  // ids[2] past the end, ids[3] negative
    std::vector<float> out(ids.size() * hidden, 0.0f);
    EmbeddingArgs host{
        .ids = TensorView::make(ids.data(), DType::kI32, {5}),
        .table = TensorView::make(table.data(), DType::kF32, {vocab, hidden}),
        .out = TensorView::make(out.data(), DType::kF32, {5, hidden}),
    };
    const Status want = ref::embedding(host);
    ASSERT_EQ(want.code(), StatusCode::kOutOfRange);

    MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_ids, to_device(be(), host.ids));
    MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_table, to_device(be(), host.table));
    MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_out, to_device(be(), host.out));
    const Status got = ops::run(be(), EmbeddingArgs{.ids = d_ids.view, .table = d_table.view, .out = d_out.view});
    EXPECT_EQ(got.code(), StatusCode::kOutOfRange) << got.to_string();
    // Same first offending index and bound as the reference: "ids[2] = 19 is outside [0, 19)".
    EXPECT_NE(got.message().find("ids[2] = 19 is outside [0, 19)"), std::string::npos) << got.message();
    EXPECT_NE(want.message().find("ids[2] = 19 is outside [0, 19)"), std::string::npos) << want.message();
    // The backend keeps working after a reported bad index.
    MOE_ASSERT_OK(be().synchronize());
}

}  // namespace
}  // namespace moe::gpu_test
