// The CUDA backend itself: factory errors, memory, copies (as tests/ops/cpu_backend_test.cc is for
// the CPU backend). The ops on it are checked by the one op-test driver in tests/ops, and the
// whole model by tests/reference, whose "Cuda" instances run the same cases as the CPU's.
#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "gpu_test_util.h"

namespace moe::gpu_test {
namespace {

TEST(CudaBackendFactory, EitherABackendOrUnavailableNamingTheReason) {
    auto be = make_cuda_backend(0);
    if (be.ok()) {
        EXPECT_STREQ(be.value()->name(), "cuda");
        EXPECT_EQ(be.value()->device(), (Device{DeviceKind::kCuda, 0}));
        return;
    }
    // This is the path CI takes: it must be kUnavailable with a readable reason, never a crash.
    EXPECT_EQ(be.status().code(), StatusCode::kUnavailable) << be.status().to_string();
    EXPECT_EQ(be.status().message().rfind("no CUDA device: ", 0), 0u) << be.status().message();
    GTEST_SKIP() << be.status().message();
}

TEST(CudaBackendFactory, RejectsADeviceThatIsNotThere) {
    auto be = make_cuda_backend(1 << 20);
    ASSERT_FALSE(be.ok());
    // Without a GPU the device count fails first (kUnavailable); with one, the index is invalid.
    EXPECT_TRUE(be.status().code() == StatusCode::kUnavailable || be.status().code() == StatusCode::kInvalidArgument)
        << be.status().to_string();
    EXPECT_FALSE(make_cuda_backend(-1).ok());
}

using CudaBackendTest = CudaTest;

TEST_F(CudaBackendTest, CopiesRoundTripThroughTheDevice) {
    std::vector<int32_t> host(1001);
    std::iota(host.begin(), host.end(), -17);
    MOE_ASSERT_OK_AND_ASSIGN(DeviceBuffer a, DeviceBuffer::allocate(be(), host.size() * 4));
    MOE_ASSERT_OK_AND_ASSIGN(DeviceBuffer b, DeviceBuffer::allocate(be(), host.size() * 4));
    MOE_ASSERT_OK(be().copy(a.data(), be().device(), host.data(), Device{}, host.size() * 4));
    MOE_ASSERT_OK(be().copy(b.data(), be().device(), a.data(), be().device(), host.size() * 4));
    std::vector<int32_t> back(host.size(), 0);
    MOE_ASSERT_OK(be().copy(back.data(), Device{}, b.data(), be().device(), back.size() * 4));
    EXPECT_EQ(back, host);
    MOE_ASSERT_OK(be().synchronize());
}

TEST_F(CudaBackendTest, ZeroByteAllocationIsARealPointer) {
    MOE_ASSERT_OK_AND_ASSIGN(void* p, be().allocate(0));
    EXPECT_NE(p, nullptr);
    be().deallocate(p);
}

TEST_F(CudaBackendTest, AbsurdAllocationIsResourceExhaustedNotACrash) {
    auto p = be().allocate(size_t{1} << 60);
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.status().code(), StatusCode::kResourceExhausted) << p.status().to_string();
    // The backend stays usable after a failed allocation.
    MOE_ASSERT_OK_AND_ASSIGN(void* q, be().allocate(256));
    be().deallocate(q);
}

TEST_F(CudaBackendTest, CopyToAnotherCudaDeviceIsRejected) {
    int x = 0;
    const Status s = be().copy(&x, Device{DeviceKind::kCuda, 7}, &x, Device{}, sizeof(x));
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
}

}  // namespace
}  // namespace moe::gpu_test
