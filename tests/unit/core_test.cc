#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <iterator>
#include <thread>
#include <vector>

#include "core/allocator.h"
#include "core/thread_pool.h"
#include "moe/dtype.h"
#include "moe/status.h"
#include "moe/tensor.h"

namespace moe {
namespace {

StatusOr<int> half_of(int x) {
    if (x % 2 != 0) return invalid_argument("x: must be even, got " + std::to_string(x));
    return x / 2;
}

Status quarter(int x, int* out) {
    MOE_ASSIGN_OR_RETURN(int h, half_of(x));
    MOE_ASSIGN_OR_RETURN(int q, half_of(h));
    *out = q;
    return ok_status();
}

TEST(Status, MacrosPropagateTheFirstError) {
    int out = 0;
    EXPECT_TRUE(quarter(8, &out).ok());
    EXPECT_EQ(out, 2);
    Status s = quarter(6, &out);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(s.to_string(), "INVALID_ARGUMENT: x: must be even, got 3");
    EXPECT_EQ(s.with_context("file a.json").message(), "file a.json: x: must be even, got 3");
}

TEST(StatusOrDeathTest, ValueOfAnErrorAborts) {
    StatusOr<int> r = half_of(3);
    EXPECT_DEATH((void)r.value(), "StatusOr::value");
}

TEST(DType, Bf16RoundsToNearestEven) {
    EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
    EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
    // 1 + 2^-8 is exactly halfway between two bf16 values: ties go to the even one (1.0).
    EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
    EXPECT_EQ(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
    EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
}

TEST(DType, F16RoundTripsEveryHalf) {
    for (uint32_t h = 0; h < 0x10000; ++h) {
        const float f = f16_to_f32(static_cast<uint16_t>(h));
        if (std::isnan(f)) continue;
        ASSERT_EQ(f32_to_f16(f), h) << "half 0x" << std::hex << h;
    }
    EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
    EXPECT_EQ(f32_to_f16(1e6f), 0x7c00);  // overflow to +inf
}

TEST(DType, ParsesSafetensorsNames) {
    EXPECT_EQ(parse_dtype("BF16"), DType::kBF16);
    EXPECT_EQ(parse_dtype("F32"), DType::kF32);
    EXPECT_EQ(parse_dtype("F8_E4M3"), DType::kF8E4M3);  // FP8 checkpoints (#20)
    EXPECT_FALSE(parse_dtype("F8_E5M2").has_value());
}

TEST(Tensor, ContiguousViews) {
    float buf[24];
    auto t = TensorView::make(buf, DType::kF32, {2, 3, 4});
    EXPECT_EQ(t.numel(), 24);
    EXPECT_EQ(t.stride(0), 12);
    EXPECT_TRUE(t.is_contiguous());
    EXPECT_EQ(t.to_string(), "f32[2, 3, 4] cpu");
    t.strides[0] = 16;
    EXPECT_FALSE(t.is_contiguous());
}

TEST(ThreadPool, CoversEveryIndexOnceForAnySize) {
    for (int threads : {1, 2, 3}) {
        ThreadPool pool(threads);
        EXPECT_EQ(pool.size(), threads);
        for (int64_t n : {0, 1, 2, 19, 111}) {
            std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
            pool.parallel_for(n, [&](int64_t b, int64_t e) {
                for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)]++;
            });
            for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[static_cast<size_t>(i)].load(), 1);
            std::vector<std::atomic<int>> task_hits(static_cast<size_t>(n));
            pool.parallel_tasks(n, [&](int64_t i) { task_hits[static_cast<size_t>(i)]++; });
            for (int64_t i = 0; i < n; ++i) ASSERT_EQ(task_hits[static_cast<size_t>(i)].load(), 1);
        }
    }
}

TEST(CpuAllocator, AlignedAndCounted) {
    const int64_t before = CpuAllocator::bytes_in_use();
    {
        auto a = HostArray<float>::make(19);
        ASSERT_TRUE(a.ok());
        EXPECT_EQ(reinterpret_cast<uintptr_t>(a->data()) % 64, 0u);
        EXPECT_EQ((*a)[18], 0.0f);
        EXPECT_GT(CpuAllocator::bytes_in_use(), before);
    }
    EXPECT_EQ(CpuAllocator::bytes_in_use(), before);
    auto huge = CpuAllocator::allocate(size_t{1} << 62);
    EXPECT_EQ(huge.status().code(), StatusCode::kResourceExhausted);
}

// Every size class (aligned_alloc below 256 KiB, shared 64 MiB huge-page chunks, mappings of
// their own from 16 MiB) hands out 64-byte aligned, writable, disjoint buffers, freed in any
// order, with the byte counter back where it started; a chunk emptied and refilled still works.
TEST(CpuAllocator, EverySizeClassAlignedDisjointAndCounted) {
    const int64_t before = CpuAllocator::bytes_in_use();
    const size_t sizes[] = {100, 300 << 10, 1 << 20, 3 << 20, 20 << 20, 70 << 10, 40 << 20, 5 << 20};
    for (int round = 0; round < 2; ++round) {
        std::vector<std::pair<char*, size_t>> bufs;
        for (size_t i = 0; i < 40; ++i) {
            const size_t n = sizes[i % std::size(sizes)] + i * 64;
            auto p = CpuAllocator::allocate(n);
            ASSERT_TRUE(p.ok()) << p.status().to_string();
            auto* c = static_cast<char*>(*p);
            ASSERT_EQ(reinterpret_cast<uintptr_t>(c) % 64, 0u) << "size " << n;
            std::memset(c, static_cast<int>(i + 1), n);
            bufs.emplace_back(c, n);
        }
        EXPECT_GE(CpuAllocator::bytes_in_use() - before, int64_t{40} * (100 + (300 << 10)));
        // Disjoint: each buffer still holds its own fill after all were written.
        for (size_t i = 0; i < bufs.size(); ++i) {
            const auto [c, n] = bufs[i];
            ASSERT_EQ(c[0], static_cast<char>(i + 1));
            ASSERT_EQ(c[n - 1], static_cast<char>(i + 1));
        }
        // Free odd ones first, then even ones backwards.
        for (size_t i = 1; i < bufs.size(); i += 2) CpuAllocator::deallocate(bufs[i].first);
        for (size_t i = bufs.size(); i-- > 0;)
            if (i % 2 == 0) CpuAllocator::deallocate(bufs[i].first);
        EXPECT_EQ(CpuAllocator::bytes_in_use(), before) << "round " << round;
    }
}

}  // namespace
}  // namespace moe
