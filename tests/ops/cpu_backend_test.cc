// CPU-backend specifics the generic driver cannot see: feature detection, the oneDNN primitive
// cache, host copies, and the thread count.
#include "backend/cpu/cpu_backend.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "backend/cpu/cpu_features.h"
#include "backend/cpu/host_memory.h"
#include "core/allocator.h"
#include "ops/op_test_util.h"

namespace moe::testing {
namespace {

TEST(CpuBackend, FeaturesAreConsistent) {
    const auto& f = cpu::cpu_features();
    std::cout << "cpu features: " << f.to_string() << "\n";
    if (f.avx512_bf16) EXPECT_TRUE(f.avx512f);
    EXPECT_EQ(&f, &cpu::cpu_features());  // detected once
}

TEST(CpuBackend, Bf16GemmReusesCachedPrimitives) {
    auto be = make_cpu_backend({.num_threads = 2});
    auto& engine = cpu::as_cpu(*be).gemm_engine();
    engine.set_bf16_tiles_max_rows(0);  // every bf16 problem on oneDNN
    std::vector<float> x(8 * 16, 1.0f), y(8 * 8, 0.0f);
    std::vector<uint16_t> w(8 * 16, f32_to_bf16(2.0f));
    GemmArgs a{host_view(x.data(), DType::kF32, {8, 16}),
               host_view(w.data(), DType::kBF16, {8, 16}),
               {},
               host_view(y.data(), DType::kF32, {8, 8})};
    MOE_ASSERT_OK(ops::run(*be, a));
    EXPECT_EQ(y[0], 32.0f);
    std::cout << "bf16 gemm implementation: " << engine.last_bf16_impl() << "\n";
    const size_t after_first = engine.cached_primitives();
    MOE_ASSERT_OK(ops::run(*be, a));
    EXPECT_EQ(engine.cached_primitives(), after_first) << "same shape must reuse the primitive";
    a.accumulate = true;
    MOE_ASSERT_OK(ops::run(*be, a));
    EXPECT_EQ(y[0], 64.0f);
    if (engine.last_bf16_impl() != "blas-fallback") EXPECT_EQ(engine.cached_primitives(), after_first + 1);
}

TEST(CpuBackend, CopiesAndAllocatesHostMemoryOnly) {
    const int64_t before = CpuAllocator::bytes_in_use();
    {
        auto be = make_cpu_backend({.num_threads = 3});
        EXPECT_EQ(be->num_threads(), 3);
        EXPECT_STREQ(be->name(), "cpu");
        auto buf = DeviceBuffer::allocate(*be, 100);
        ASSERT_TRUE(buf.ok());
        EXPECT_EQ(reinterpret_cast<uintptr_t>(buf->data()) % 64, 0u);
        const char src[4] = {1, 2, 3, 4};
        MOE_ASSERT_OK(be->copy(buf->data(), Device{}, src, Device{}, 4));
        EXPECT_EQ(static_cast<char*>(buf->data())[3], 4);
        const Status s = be->copy(buf->data(), Device{DeviceKind::kCuda, 0}, src, Device{}, 4);
        EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
        EXPECT_NE(s.message().find("cuda:0"), std::string::npos) << s.message();
    }
    EXPECT_EQ(CpuAllocator::bytes_in_use(), before);
}

// memory_info: /proc/meminfo's MemTotal / MemAvailable, capped by a cgroup limit where one is set
// (a container sizes its KV cache by its own limit, not by the machine).
TEST(CpuBackendMemory, MeminfoCappedByTheCgroupLimit) {
    const std::string meminfo =
        "MemTotal:       16000000 kB\nMemFree:         1000000 kB\nMemAvailable:    8000000 kB\n";
    auto none = cpu::host_memory_info_from(meminfo, {});
    MOE_ASSERT_OK(none.status());
    EXPECT_EQ(none->total_bytes, int64_t{16000000} * 1024);
    EXPECT_EQ(none->available_bytes, int64_t{8000000} * 1024);
    auto capped = cpu::host_memory_info_from(meminfo, {.limit = int64_t{4} << 30, .usage = int64_t{1} << 30});
    MOE_ASSERT_OK(capped.status());
    EXPECT_EQ(capped->total_bytes, int64_t{4} << 30);
    EXPECT_EQ(capped->available_bytes, int64_t{3} << 30);
    auto full = cpu::host_memory_info_from(meminfo, {.limit = int64_t{1} << 30, .usage = int64_t{2} << 30});
    MOE_ASSERT_OK(full.status());
    EXPECT_EQ(full->available_bytes, 0);
    EXPECT_EQ(cpu::host_memory_info_from("MemTotal: 5 kB\n", {}).status().code(), StatusCode::kUnavailable);

    auto be = make_cpu_backend({.num_threads = 1});
    auto here = be->memory_info();
    MOE_ASSERT_OK(here.status());
    EXPECT_GT(here->total_bytes, 0);
    EXPECT_GE(here->available_bytes, 0);
    EXPECT_LE(here->available_bytes, here->total_bytes);
}

// prepare_weight copies: the source may be overwritten afterwards; bad weights are refused by
// name; weight_summary counts what is alive.
TEST(CpuBackendWeights, PreparedWeightsAreCopiesCountedWhileAlive) {
    auto be = make_cpu_backend({.num_threads = 2});
    std::vector<float> w(6 * 4);
    for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(i);
    auto h = be->prepare_weight("layer.w", host_view(w.data(), DType::kF32, {6, 4}), WeightUse::kMatmul);
    MOE_ASSERT_OK(h.status());
    EXPECT_NE((*h)->logical().data, static_cast<void*>(w.data()));
    EXPECT_EQ(be->weight_summary(), "1 row-major; 0.0 MiB");
    std::vector<float> x(4, 1.0f), y(6, 0.0f);
    std::fill(w.begin(), w.end(), NAN);  // nothing may read the source any more
    MOE_ASSERT_OK(ops::run(*be, GemmArgs{.x = host_view(x.data(), DType::kF32, {1, 4}),
                                         .w = WeightView(**h),
                                         .bias = {},
                                         .y = host_view(y.data(), DType::kF32, {1, 6})}));
    EXPECT_EQ(y[5], 20.0f + 21.0f + 22.0f + 23.0f);
    h->reset();
    EXPECT_EQ(be->weight_summary(), "");
    const Status bad = be->prepare_weight("layer.bad", TensorView{}, WeightUse::kMatmul).status();
    EXPECT_EQ(bad.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(bad.message().find("layer.bad"), std::string::npos) << bad.message();
}

}  // namespace
}  // namespace moe::testing
