// kv_write on the CUDA backend against moe::ref::kv_write: f32 and bf16 caches, skipped slots,
// untouched slots, bad slots reported without writing outside the cache.
#include <gtest/gtest.h>

#include <vector>

#include "gpu_test_util.h"
#include "ops/ops.h"

namespace moe::gpu_test {
namespace {

using CudaKvWriteTest = CudaTest;

constexpr int64_t kBlocks = 5;
constexpr int64_t kBlockSize = 4;
constexpr int64_t kKvHeads = 2;
constexpr int64_t kHeadDim = 19;
constexpr int64_t kRow = kKvHeads * kHeadDim;
constexpr int64_t kCacheElems = kBlocks * kBlockSize * kRow;

// The cache as raw bytes of its dtype, pre-filled with a sentinel so that stray writes show.
std::vector<uint8_t> sentinel_cache(DType dt) {
    std::vector<uint8_t> bytes(static_cast<size_t>(kCacheElems) * dtype_size(dt), 0xA5);
    return bytes;
}

TEST_F(CudaKvWriteTest, MatchesReferenceBitForBit) {
    for (DType dt : {DType::kF32, DType::kBF16}) {
        SCOPED_TRACE(dtype_name(dt));
        const int64_t tokens = 7;
        std::vector<float> k = random_floats(static_cast<size_t>(tokens * kRow), 21);
        std::vector<float> v = random_floats(static_cast<size_t>(tokens * kRow), 22);
        // Across blocks, out of order, with skipped tokens; the last slot of the cache is used.
        std::vector<int64_t> slots = {3, -1, 19, 4, 0, -1, 10};
        std::vector<uint8_t> k_want = sentinel_cache(dt), v_want = sentinel_cache(dt);
        auto args = [&](void* kc, void* vc, Device dev, void* kd, void* vd, void* sd) {
            return KvWriteArgs{
                .k = TensorView::make(kd, DType::kF32, {tokens, kKvHeads, kHeadDim}, dev),
                .v = TensorView::make(vd, DType::kF32, {tokens, kKvHeads, kHeadDim}, dev),
                .slot_mapping = TensorView::make(sd, DType::kI64, {tokens}, dev),
                .k_cache = TensorView::make(kc, dt, {kBlocks, kBlockSize, kKvHeads, kHeadDim}, dev),
                .v_cache = TensorView::make(vc, dt, {kBlocks, kBlockSize, kKvHeads, kHeadDim}, dev),
            };
        };
        const KvWriteArgs host = args(k_want.data(), v_want.data(), Device{}, k.data(), v.data(), slots.data());
        std::vector<uint8_t> k_got = sentinel_cache(dt), v_got = sentinel_cache(dt);
        const TensorView k_got_v = TensorView::make(k_got.data(), dt, {kBlocks, kBlockSize, kKvHeads, kHeadDim});
        const TensorView v_got_v = TensorView::make(v_got.data(), dt, {kBlocks, kBlockSize, kKvHeads, kHeadDim});
        MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_kc, to_device(be(), k_got_v));
        MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_vc, to_device(be(), v_got_v));
        MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_k, to_device(be(), host.k));
        MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_v, to_device(be(), host.v));
        MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_s, to_device(be(), host.slot_mapping));
        MOE_ASSERT_OK(ref::kv_write(host));
        MOE_ASSERT_OK(ops::run(
            be(), args(d_kc.view.data, d_vc.view.data, be().device(), d_k.view.data, d_v.view.data, d_s.view.data)));
        MOE_ASSERT_OK(to_host(be(), d_kc, k_got_v));
        MOE_ASSERT_OK(to_host(be(), d_vc, v_got_v));
        // Written slots hold the values (bf16: round to nearest even on both sides); all other
        // slots keep the sentinel.
        EXPECT_TRUE(bitwise_equal(k_got, k_want));
        EXPECT_TRUE(bitwise_equal(v_got, v_want));
    }
}

TEST_F(CudaKvWriteTest, SlotOutsideTheCacheIsReportedAndNotWritten) {
    const int64_t tokens = 3;
    std::vector<float> k = random_floats(static_cast<size_t>(tokens * kRow), 31);
    std::vector<float> v = random_floats(static_cast<size_t>(tokens * kRow), 32);
    std::vector<int64_t> slots = {1, kBlocks * kBlockSize, -2};
    // One cache allocation with room after it: the bad slot would land exactly in the guard.
    const int64_t guarded = kCacheElems + kRow;
    std::vector<float> k_cache(static_cast<size_t>(guarded), 7.0f);
    const TensorView k_all = TensorView::make(k_cache.data(), DType::kF32, {guarded});
    MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_kc, to_device(be(), k_all));
    MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_vc, to_device(be(), k_all));
    MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_k,
                             to_device(be(), TensorView::make(k.data(), DType::kF32, {tokens * kRow})));
    MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_v,
                             to_device(be(), TensorView::make(v.data(), DType::kF32, {tokens * kRow})));
    MOE_ASSERT_OK_AND_ASSIGN(DeviceTensor d_s, to_device(be(), TensorView::make(slots.data(), DType::kI64, {tokens})));
    const Device dev = be().device();
    const KvWriteArgs args{
        .k = TensorView::make(d_k.view.data, DType::kF32, {tokens, kKvHeads, kHeadDim}, dev),
        .v = TensorView::make(d_v.view.data, DType::kF32, {tokens, kKvHeads, kHeadDim}, dev),
        .slot_mapping = TensorView::make(d_s.view.data, DType::kI64, {tokens}, dev),
        .k_cache = TensorView::make(d_kc.view.data, DType::kF32, {kBlocks, kBlockSize, kKvHeads, kHeadDim}, dev),
        .v_cache = TensorView::make(d_vc.view.data, DType::kF32, {kBlocks, kBlockSize, kKvHeads, kHeadDim}, dev),
    };
    const Status s = ops::run(be(), args);
    EXPECT_EQ(s.code(), StatusCode::kOutOfRange) << s.to_string();
    EXPECT_NE(s.message().find("slot_mapping[1] = 20 is outside [-1, 20)"), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("2 bad"), std::string::npos) << s.message();
    std::vector<float> after(static_cast<size_t>(guarded), 0.0f);
    MOE_ASSERT_OK(to_host(be(), d_kc, TensorView::make(after.data(), DType::kF32, {guarded})));
    for (int64_t i = kCacheElems; i < guarded; ++i) ASSERT_EQ(after[i], 7.0f) << "guard element " << i;
}

}  // namespace
}  // namespace moe::gpu_test
