// LocalComm (the group of one) and the shared all_to_all_v checks, without any library.
#include <gtest/gtest.h>

#include <climits>
#include <cstring>
#include <vector>

#include "comm/comm_check.h"
#include "comm/communicator.h"
#include "comm/mpi_comm.h"

namespace moe::comm {
namespace {

std::vector<std::byte> bytes(size_t n, uint8_t seed) {
    std::vector<std::byte> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>(seed + i * 31);
    return v;
}

TEST(LocalComm, RankSizeKind) {
    auto c = make_local_comm();
    EXPECT_EQ(c->rank(), 0);
    EXPECT_EQ(c->size(), 1);
    EXPECT_STREQ(c->kind(), "local");
}

TEST(LocalComm, AllReduceLeavesValues) {
    auto c = make_local_comm();
    std::vector<int64_t> v{3, -7, 1LL << 40};
    ASSERT_TRUE(c->all_reduce_sum(v).ok());
    EXPECT_EQ(v, (std::vector<int64_t>{3, -7, 1LL << 40}));
    ASSERT_TRUE(c->all_reduce_max(v).ok());
    EXPECT_EQ(v, (std::vector<int64_t>{3, -7, 1LL << 40}));
    EXPECT_TRUE(c->barrier().ok());
}

TEST(LocalComm, AllToAllVCopiesTheSliceAtItsDisplacements) {
    auto c = make_local_comm();
    auto send = bytes(40, 5);
    std::vector<std::byte> recv(64, std::byte{0xAB});
    const int64_t sc[] = {17}, sd[] = {9}, rc[] = {17}, rd[] = {30};
    ASSERT_TRUE(c->all_to_all_v(send, sc, sd, recv, rc, rd).ok());
    EXPECT_EQ(std::memcmp(recv.data() + 30, send.data() + 9, 17), 0);
    for (size_t i = 0; i < recv.size(); ++i)
        if (i < 30 || i >= 47) EXPECT_EQ(recv[i], std::byte{0xAB}) << "byte " << i << " outside the range was written";
}

TEST(LocalComm, ZeroBytesWithEmptyBuffers) {
    auto c = make_local_comm();
    const int64_t z[] = {0};
    EXPECT_TRUE(c->all_to_all_v({}, z, z, {}, z, z).ok());
}

TEST(LocalComm, RefusesBadCounts) {
    auto c = make_local_comm();
    auto send = bytes(16, 1);
    std::vector<std::byte> recv(16);
    const int64_t zero[] = {0}, ten[] = {10}, neg[] = {-1}, big[] = {17}, two[] = {0, 0};
    EXPECT_EQ(c->all_to_all_v(send, ten, zero, recv, zero, zero).code(), StatusCode::kInvalidArgument);  // 10 vs 0
    EXPECT_EQ(c->all_to_all_v(send, neg, zero, recv, neg, zero).code(), StatusCode::kOutOfRange);
    EXPECT_EQ(c->all_to_all_v(send, big, zero, recv, big, zero).code(), StatusCode::kOutOfRange);
    EXPECT_EQ(c->all_to_all_v(send, ten, ten, recv, ten, zero).code(), StatusCode::kOutOfRange);  // 10+10 > 16
    EXPECT_EQ(c->all_to_all_v(send, two, two, recv, two, two).code(), StatusCode::kInvalidArgument);
    std::vector<int64_t> out(2);
    const int64_t in1[] = {4};
    EXPECT_EQ(c->all_to_all_counts(in1, out).code(), StatusCode::kInvalidArgument);
    std::vector<int64_t> out1(1);
    ASSERT_TRUE(c->all_to_all_counts(in1, out1).ok());
    EXPECT_EQ(out1[0], 4);
}

// The checks MpiComm and NcclComm run before posting anything.
TEST(CommCheck, AcceptsUnevenZeroAndGappedRanges) {
    const int64_t sc[] = {3, 0, 5}, sd[] = {0, 3, 4}, rc[] = {0, 2, 7}, rd[] = {0, 8, 0};
    EXPECT_TRUE(check_all_to_all_v("t", 3, nullptr, 9, sc, sd, nullptr, 10, rc, rd, INT_MAX).ok());
}

TEST(CommCheck, RefusesEachBadField) {
    const int64_t ok3[] = {1, 1, 1}, d3[] = {0, 1, 2};
    auto code = [&](std::span<const int64_t> sc, std::span<const int64_t> sd, std::span<const int64_t> rc,
                    std::span<const int64_t> rd, size_t sbytes = 3, size_t rbytes = 3, int64_t max = INT_MAX) {
        Status st = check_all_to_all_v("MpiComm rank 0 of 3: all_to_all_v", 3, nullptr, sbytes, sc, sd, nullptr, rbytes,
                                       rc, rd, max);
        if (!st.ok()) EXPECT_NE(st.message().find("MpiComm rank 0 of 3"), std::string::npos) << st.message();
        return st.code();
    };
    const int64_t two[] = {1, 1};
    EXPECT_EQ(code(two, d3, ok3, d3), StatusCode::kInvalidArgument);  // wrong length
    EXPECT_EQ(code(ok3, d3, ok3, two), StatusCode::kInvalidArgument);
    const int64_t neg[] = {1, -1, 1};
    EXPECT_EQ(code(neg, d3, ok3, d3), StatusCode::kOutOfRange);
    EXPECT_EQ(code(ok3, neg, ok3, d3), StatusCode::kOutOfRange);
    const int64_t past[] = {0, 1, 3};  // [3, 4) past a 3-byte buffer
    EXPECT_EQ(code(ok3, past, ok3, d3), StatusCode::kOutOfRange);
    EXPECT_EQ(code(ok3, d3, ok3, past), StatusCode::kOutOfRange);
    const int64_t overlap[] = {0, 0, 2};  // ranks 0 and 1 both write byte 0
    EXPECT_EQ(code(ok3, d3, ok3, overlap), StatusCode::kInvalidArgument);
    // Counts above the library's count type are refused, not truncated (2^31 wraps to INT_MIN).
    const int64_t huge[] = {int64_t{1} << 31, 0, 0}, z3[] = {0, 0, 0};
    Status st = check_all_to_all_v("t", 3, nullptr, size_t{1} << 32, huge, z3, nullptr, 3, z3, d3, INT_MAX);
    EXPECT_EQ(st.code(), StatusCode::kOutOfRange);
    EXPECT_NE(st.message().find("not truncated"), std::string::npos) << st.message();
    // Overflow of displ + count is caught, not wrapped.
    const int64_t big_d[] = {INT64_MAX, 0, 0};
    EXPECT_EQ(code(ok3, big_d, ok3, d3, 3, 3, INT64_MAX), StatusCode::kOutOfRange);
    // Send and receive buffers that overlap in memory (one workspace with disjoint halves is fine).
    std::vector<std::byte> ws(8);
    EXPECT_EQ(check_all_to_all_v("t", 3, ws.data(), 3, ok3, d3, ws.data() + 2, 3, ok3, d3, INT_MAX).code(),
              StatusCode::kInvalidArgument);
    EXPECT_TRUE(check_all_to_all_v("t", 3, ws.data(), 3, ok3, d3, ws.data() + 3, 3, ok3, d3, INT_MAX).ok());
}

TEST(MpiBuild, AvailabilityMatchesTheBuild) {
#ifdef MOE_HAVE_MPI
    EXPECT_TRUE(mpi_available());
    // Not initialised in this process (no mpirun): refused, not crashed.
    auto c = make_mpi_comm(CommOptions{});
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.status().code(), StatusCode::kFailedPrecondition) << c.status().to_string();
#else
    EXPECT_FALSE(mpi_available());
    auto c = make_mpi_comm(CommOptions{});
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.status().code(), StatusCode::kUnimplemented);
    EXPECT_NE(c.status().message().find("without MPI"), std::string::npos);
#endif
}

}  // namespace
}  // namespace moe::comm
