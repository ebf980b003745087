// CPU-backend specifics the generic driver cannot see: feature detection, the oneDNN primitive
// cache, host copies, and the thread count.
#include "backend/cpu/cpu_backend.h"

#include <gtest/gtest.h>

#include "backend/cpu/cpu_features.h"
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

}  // namespace
}  // namespace moe::testing
