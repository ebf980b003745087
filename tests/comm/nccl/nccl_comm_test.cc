// NcclComm on one GPU (N = 1: the whole NCCL call sequence, device buffers, the checks). Skips
// visibly where no device answers (any cudaGetDeviceCount error). Built wherever CUDA and NCCL
// are; run only where a GPU is.
#include "comm/nccl_comm.h"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <vector>

namespace moe::comm {
namespace {

class NcclSingle : public ::testing::Test {
protected:
    void SetUp() override {
        CommOptions opts;
        opts.timeout = std::chrono::seconds(30);
        auto c = make_nccl_comm_single(0, opts);
        if (!c.ok()) {
            if (c.status().code() == StatusCode::kUnavailable &&
                c.status().message().find("no CUDA device") != std::string::npos)
                GTEST_SKIP() << c.status().message();
            FAIL() << "make_nccl_comm_single(0): " << c.status().to_string();
        }
        comm_ = std::move(c).value();
    }
    std::unique_ptr<Communicator> comm_;
};

// Device memory released at scope end.
struct DeviceBytes {
    explicit DeviceBytes(size_t n) : n(n) { EXPECT_EQ(cudaMalloc(&p, n == 0 ? 1 : n), cudaSuccess); }
    ~DeviceBytes() { cudaFree(p); }
    std::span<std::byte> span() { return {static_cast<std::byte*>(p), n}; }
    void* p = nullptr;
    size_t n;
};

TEST(NcclComm, MissingDeviceIsUnavailableNotACrash) {
    auto c = make_nccl_comm_single(99, CommOptions{});
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.status().code(), StatusCode::kUnavailable);
    EXPECT_NE(c.status().message().find("no CUDA device"), std::string::npos) << c.status().message();
}

TEST_F(NcclSingle, RankSizeKindAndReductions) {
    EXPECT_EQ(comm_->rank(), 0);
    EXPECT_EQ(comm_->size(), 1);
    EXPECT_STREQ(comm_->kind(), "nccl");
    std::vector<int64_t> v{5, -3, int64_t{1} << 40};
    ASSERT_TRUE(comm_->all_reduce_sum(v).ok());
    EXPECT_EQ(v, (std::vector<int64_t>{5, -3, int64_t{1} << 40}));
    ASSERT_TRUE(comm_->all_reduce_max(v).ok());
    EXPECT_EQ(v, (std::vector<int64_t>{5, -3, int64_t{1} << 40}));
    std::vector<int64_t> in{int64_t{7} << 33}, out{0};
    ASSERT_TRUE(comm_->all_to_all_counts(in, out).ok());
    EXPECT_EQ(out[0], int64_t{7} << 33);
    EXPECT_TRUE(comm_->barrier().ok());
}

TEST_F(NcclSingle, AllToAllVOnDeviceBuffersBitwise) {
    std::vector<std::byte> host(1000);
    for (size_t i = 0; i < host.size(); ++i) host[i] = static_cast<std::byte>((i * 37 + 11) & 0xff);
    DeviceBytes send(1000), recv(1200);
    ASSERT_EQ(cudaMemcpy(send.p, host.data(), 1000, cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaMemset(recv.p, 0xAB, 1200), cudaSuccess);
    const int64_t sc[] = {777}, sd[] = {123}, rc[] = {777}, rd[] = {200};
    ASSERT_TRUE(comm_->all_to_all_v(send.span(), sc, sd, recv.span(), rc, rd).ok());
    std::vector<std::byte> back(1200);
    ASSERT_EQ(cudaMemcpy(back.data(), recv.p, 1200, cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(std::memcmp(back.data() + 200, host.data() + 123, 777), 0);
    for (size_t i = 0; i < back.size(); ++i)
        if (i < 200 || i >= 977) ASSERT_EQ(back[i], std::byte{0xAB}) << "byte " << i << " outside the range";
}

TEST_F(NcclSingle, BadCountsRefusedBeforeAnythingIsEnqueued) {
    DeviceBytes a(16), b(16);
    const int64_t z[] = {0}, past[] = {17}, neg[] = {-1}, two[] = {0, 0};
    EXPECT_EQ(comm_->all_to_all_v(a.span(), past, z, b.span(), past, z).code(), StatusCode::kOutOfRange);
    EXPECT_EQ(comm_->all_to_all_v(a.span(), neg, z, b.span(), neg, z).code(), StatusCode::kOutOfRange);
    EXPECT_EQ(comm_->all_to_all_v(a.span(), two, two, b.span(), two, two).code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(comm_->all_to_all_v(a.span(), z, z, a.span(), z, z).code(), StatusCode::kInvalidArgument);  // aliased
    // Still usable after refusals.
    EXPECT_TRUE(comm_->barrier().ok());
}

}  // namespace
}  // namespace moe::comm
