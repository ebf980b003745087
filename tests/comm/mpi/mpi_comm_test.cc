// MpiComm under `mpirun -np N` (ctest runs it for N = 1, 2, 3): every rank runs every test in
// the same order, so the collectives line up. A rank whose check fails still makes the same
// calls; the job's exit status is the worst rank's (mpirun reports any non-zero exit).
#include "comm/mpi_comm.h"

#include <gtest/gtest.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <thread>
#include <vector>

namespace moe::comm {
namespace {

Communicator* g_comm = nullptr;

// The byte rank `src` sends rank `dst` at offset `i`: a function of all three, so a misplaced,
// swapped or truncated range cannot compare equal.
std::byte payload(int src, int dst, int64_t i) {
    return static_cast<std::byte>((src * 131 + dst * 29 + i * 7 + (i >> 8)) & 0xff);
}
// Uneven and sometimes zero byte counts from `src` to `dst`: zero when (src + 2*dst) % 3 == 0.
int64_t count_of(int src, int dst) {
    return ((src + 2 * dst) % 3 == 0) ? 0 : 1 + (src * 53 + dst * 97) % 300;
}

TEST(MpiComm, RankSizeKind) {
    const char* env = std::getenv("OMPI_COMM_WORLD_SIZE");
    ASSERT_NE(env, nullptr) << "run under mpirun";
    EXPECT_EQ(g_comm->size(), std::atoi(env));
    EXPECT_GE(g_comm->rank(), 0);
    EXPECT_LT(g_comm->rank(), g_comm->size());
    EXPECT_STREQ(g_comm->kind(), "mpi");
    EXPECT_TRUE(launched_by_mpi());
    EXPECT_TRUE(mpi_available());
}

TEST(MpiComm, AllReduceSumAndMax) {
    const int n = g_comm->size(), r = g_comm->rank();
    // Distinct per rank and beyond 32 bits, so a narrowing type or a wrong op shows.
    std::vector<int64_t> v{r, 1, (int64_t{1} << 40) * (r + 1), -r};
    ASSERT_TRUE(g_comm->all_reduce_sum(v).ok());
    const int64_t tri = int64_t{n} * (n - 1) / 2;
    EXPECT_EQ(v, (std::vector<int64_t>{tri, n, (int64_t{1} << 40) * (tri + n), -tri}));
    std::vector<int64_t> m{r, -r, 7};
    ASSERT_TRUE(g_comm->all_reduce_max(m).ok());
    EXPECT_EQ(m, (std::vector<int64_t>{n - 1, 0, 7}));
    std::vector<int64_t> empty;
    EXPECT_TRUE(g_comm->all_reduce_sum(empty).ok());
    std::vector<int64_t> big(10007);
    std::iota(big.begin(), big.end(), r);
    ASSERT_TRUE(g_comm->all_reduce_sum(big).ok());
    for (size_t i = 0; i < big.size(); ++i) ASSERT_EQ(big[i], int64_t(n) * int64_t(i) + tri) << i;
}

TEST(MpiComm, AllToAllCounts) {
    const int n = g_comm->size(), r = g_comm->rank();
    std::vector<int64_t> in(n), out(n, -1);
    for (int d = 0; d < n; ++d) in[d] = 1000 * r + d + (int64_t{1} << 33);
    ASSERT_TRUE(g_comm->all_to_all_counts(in, out).ok());
    for (int s = 0; s < n; ++s) EXPECT_EQ(out[s], 1000 * s + r + (int64_t{1} << 33)) << "from rank " << s;
}

// Uneven and zero counts, send ranges in reverse rank order with gaps, receive ranges gapped
// too: every received byte compared, every byte outside a range still its sentinel.
TEST(MpiComm, AllToAllVUnevenAndZeroCountsBitwise) {
    const int n = g_comm->size(), me = g_comm->rank();
    std::vector<int64_t> sc(n), sd(n), rc(n), rd(n);
    int64_t off = 0;
    for (int d = n - 1; d >= 0; --d) {
        sc[d] = count_of(me, d);
        sd[d] = off;
        off += sc[d] + 5;
    }
    std::vector<std::byte> send(static_cast<size_t>(off));
    for (int d = 0; d < n; ++d)
        for (int64_t i = 0; i < sc[d]; ++i) send[static_cast<size_t>(sd[d] + i)] = payload(me, d, i);
    // The counts travel first, as in the EP dispatch.
    ASSERT_TRUE(g_comm->all_to_all_counts(sc, rc).ok());
    off = 3;
    for (int s = 0; s < n; ++s) {
        EXPECT_EQ(rc[s], count_of(s, me));
        rd[s] = off;
        off += rc[s] + 11;
    }
    std::vector<std::byte> recv(static_cast<size_t>(off), std::byte{0xAB});
    ASSERT_TRUE(g_comm->all_to_all_v(send, sc, sd, recv, rc, rd).ok());
    std::vector<bool> in_range(recv.size(), false);
    for (int s = 0; s < n; ++s)
        for (int64_t i = 0; i < rc[s]; ++i) {
            ASSERT_EQ(recv[static_cast<size_t>(rd[s] + i)], payload(s, me, i)) << "from rank " << s << " byte " << i;
            in_range[static_cast<size_t>(rd[s] + i)] = true;
        }
    for (size_t i = 0; i < recv.size(); ++i)
        if (!in_range[i]) ASSERT_EQ(recv[i], std::byte{0xAB}) << "byte " << i << " outside every range was written";
}

TEST(MpiComm, AllToAllVEverythingZero) {
    const int n = g_comm->size();
    std::vector<int64_t> z(n, 0);
    EXPECT_TRUE(g_comm->all_to_all_v({}, z, z, {}, z, z).ok());
}

// A rank with nothing to send and nothing to receive (rank 0) still joins, while the others
// exchange: the idle-rank case of expert parallelism.
TEST(MpiComm, AllToAllVIdleRank) {
    const int n = g_comm->size(), me = g_comm->rank();
    std::vector<int64_t> sc(n, 0), sd(n, 0), rc(n, 0), rd(n, 0);
    std::vector<std::byte> send, recv;
    if (me != 0) {
        for (int d = 1; d < n; ++d) sc[d] = 64, sd[d] = 64 * (d - 1);
        for (int s = 1; s < n; ++s) rc[s] = 64, rd[s] = 64 * (s - 1);
        send.resize(64 * (n - 1));
        recv.resize(64 * (n - 1));
        for (int d = 1; d < n; ++d)
            for (int i = 0; i < 64; ++i) send[64 * (d - 1) + i] = payload(me, d, i);
    }
    ASSERT_TRUE(g_comm->all_to_all_v(send, sc, sd, recv, rc, rd).ok());
    if (me != 0)
        for (int s = 1; s < n; ++s)
            for (int i = 0; i < 64; ++i) ASSERT_EQ(recv[64 * (s - 1) + i], payload(s, me, i));
}

// Refused before anything is posted, on every rank alike, so the group stays in lockstep and
// usable: the barrier after each refusal completes.
TEST(MpiComm, BadCountsRefusedClearlyAndCommStaysUsable) {
    const int n = g_comm->size();
    std::vector<std::byte> buf(16), rbuf(16);
    std::vector<int64_t> z(n, 0), wrong(n + 1, 0), neg(n, 0), past(n, 0), huge(n, 0);
    neg[0] = -4;
    past[n - 1] = 17;
    huge[0] = int64_t{1} << 31;
    Status st = g_comm->all_to_all_v(buf, wrong, wrong, rbuf, z, z);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(st.message().find("send_counts has"), std::string::npos) << st.message();
    EXPECT_NE(st.message().find("MpiComm rank"), std::string::npos) << st.message();
    st = g_comm->all_to_all_v(buf, neg, z, rbuf, z, z);
    EXPECT_EQ(st.code(), StatusCode::kOutOfRange) << st.message();
    st = g_comm->all_to_all_v(buf, z, z, rbuf, past, z);
    EXPECT_EQ(st.code(), StatusCode::kOutOfRange);
    EXPECT_NE(st.message().find("outside the recv buffer of 16 bytes"), std::string::npos) << st.message();
    st = g_comm->all_to_all_v(buf, huge, z, rbuf, z, z);
    EXPECT_EQ(st.code(), StatusCode::kOutOfRange);
    EXPECT_NE(st.message().find("2147483648"), std::string::npos) << st.message();
    // The same buffer for sending and receiving (MPI forbids the aliasing).
    st = g_comm->all_to_all_v(buf, z, z, buf, z, z);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(st.message().find("overlap"), std::string::npos) << st.message();
    std::vector<int64_t> inout(n, 1);
    st = g_comm->all_to_all_counts(inout, inout);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(st.message().find("in and out overlap"), std::string::npos) << st.message();
    std::vector<int64_t> out(n + 2);
    EXPECT_EQ(g_comm->all_to_all_counts(z, out).code(), StatusCode::kInvalidArgument);
    EXPECT_TRUE(g_comm->barrier().ok());
    std::vector<int64_t> one{1};
    ASSERT_TRUE(g_comm->all_reduce_sum(one).ok());
    EXPECT_EQ(one[0], n);
}

// MPI_THREAD_SERIALIZED: the engine thread, not main, makes the calls.
TEST(MpiComm, CollectivesFromAnotherThread) {
    Status st;
    std::vector<int64_t> v{g_comm->rank() + 1};
    std::thread t([&] {
        st = g_comm->all_reduce_sum(v);
        if (st.ok()) st = g_comm->barrier();
    });
    t.join();
    ASSERT_TRUE(st.ok()) << st.to_string();
    const int n = g_comm->size();
    EXPECT_EQ(v[0], int64_t{n} * (n + 1) / 2);
}

// Many small steps in a row (the per-layer pattern: counts, then data), checking each.
TEST(MpiComm, ManyStepsStayInLockstep) {
    const int n = g_comm->size(), me = g_comm->rank();
    for (int step = 0; step < 200; ++step) {
        std::vector<int64_t> sc(n), sd(n), rc(n), rd(n);
        int64_t off = 0;
        for (int d = 0; d < n; ++d) sc[d] = (step + me + d) % 4 * 8, sd[d] = off, off += sc[d];
        std::vector<std::byte> send(static_cast<size_t>(off));
        for (int d = 0; d < n; ++d)
            for (int64_t i = 0; i < sc[d]; ++i) send[static_cast<size_t>(sd[d] + i)] = payload(me, d, i + step);
        ASSERT_TRUE(g_comm->all_to_all_counts(sc, rc).ok());
        off = 0;
        for (int s = 0; s < n; ++s) rd[s] = off, off += rc[s];
        std::vector<std::byte> recv(static_cast<size_t>(off));
        ASSERT_TRUE(g_comm->all_to_all_v(send, sc, sd, recv, rc, rd).ok());
        for (int s = 0; s < n; ++s)
            for (int64_t i = 0; i < rc[s]; ++i)
                ASSERT_EQ(recv[static_cast<size_t>(rd[s] + i)], payload(s, me, i + step)) << "step " << step;
    }
}

}  // namespace
}  // namespace moe::comm

int main(int argc, char** argv) {
    ::testing::InitGoogleTest(&argc, argv);
    moe::Status st = moe::comm::mpi_init(&argc, &argv);
    if (!st.ok()) {
        std::fprintf(stderr, "mpi_init: %s\n", st.to_string().c_str());
        return 2;
    }
    int rc = 0;
    {
        moe::comm::CommOptions opts;
        opts.timeout = std::chrono::seconds(std::getenv("MOE_TEST_COMM_TIMEOUT_S")
                                                ? std::atoi(std::getenv("MOE_TEST_COMM_TIMEOUT_S"))
                                                : 20);  // a lost lockstep ends the test, not the ctest TIMEOUT
        auto comm = moe::comm::make_mpi_comm(opts);
        if (!comm.ok()) {
            std::fprintf(stderr, "make_mpi_comm: %s\n", comm.status().to_string().c_str());
            moe::comm::mpi_finalize(3);
            return 3;
        }
        moe::comm::g_comm = comm->get();
        rc = RUN_ALL_TESTS();
        moe::comm::g_comm = nullptr;
    }
    moe::comm::mpi_finalize(rc == 0 ? 1 : rc);
    return rc;
}
