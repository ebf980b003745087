// MpiComm: non-blocking MPI collectives polled against a deadline (see mpi_comm.h).
#include "comm/mpi_comm.h"

#include <fmt/format.h>
#include <mpi.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "comm/comm_check.h"
#include "core/logging.h"

namespace moe::comm {
namespace {

// Set when any communicator broke: mpi_finalize must not wait on its pending requests.
std::atomic<bool> g_broken{false};
std::atomic<bool> g_initialised_here{false};
// The tag of all_to_all_v's messages on the communicator's own duplicate (no other traffic).
constexpr int kA2aTag = 0x4d6f;

spdlog::logger& comm_log() {
    static auto l = log::get("comm");
    return *l;
}

std::string mpi_error_string(int rc) {
    char buf[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, buf, &len) != MPI_SUCCESS) return fmt::format("MPI error {}", rc);
    return std::string(buf, static_cast<size_t>(len));
}

// Waits for `req` until `deadline`. Polls with MPI_Test: spins briefly (a collective among
// ranks that are all ready completes in microseconds), then yields, then sleeps in growing
// steps up to 1 ms so that a rank waiting on a slow peer leaves the core to it (on an
// oversubscribed machine the peer may need this very core).
enum class WaitResult { kDone, kTimedOut, kError };
// `test(&flag)` is MPI_Test or MPI_Testall on the pending request(s); returns an MPI code.
template <typename Test>
WaitResult wait_until(Test&& test, std::chrono::steady_clock::time_point deadline, int* rc_out) {
    using clock = std::chrono::steady_clock;
    int flag = 0;
    for (uint64_t it = 0;; ++it) {
        const int rc = test(&flag);
        if (rc != MPI_SUCCESS) {
            *rc_out = rc;
            return WaitResult::kError;
        }
        if (flag) return WaitResult::kDone;
        if ((it & 63) == 0 && clock::now() >= deadline) return WaitResult::kTimedOut;
        if (it < 256) continue;
        if (it < 4096) {
            std::this_thread::yield();
            continue;
        }
        const auto step = std::chrono::microseconds(std::min<uint64_t>(1000, 20 + (it - 4096) * 10));
        std::this_thread::sleep_for(step);
        if (clock::now() >= deadline) {
            // One last test: the request may have completed during the sleep.
            if (test(&flag) == MPI_SUCCESS && flag) return WaitResult::kDone;
            return WaitResult::kTimedOut;
        }
    }
}

WaitResult wait_one(MPI_Request* req, std::chrono::steady_clock::time_point deadline, int* rc_out) {
    return wait_until([req](int* flag) { return MPI_Test(req, flag, MPI_STATUS_IGNORE); }, deadline, rc_out);
}

class MpiComm final : public Communicator {
public:
    MpiComm(MPI_Comm comm, int rank, int size, CommOptions options)
        : comm_(comm), rank_(rank), size_(size), options_(options) {}

    ~MpiComm() override {
        // A broken communicator has a request MPI cannot cancel; freeing it would wait for the
        // lost peer. It is left to the process's end (mpi_finalize aborts the job).
        // After MPI_Finalize (a caller that finalized first) MPI may not be called at all.
        int finalized = 0;
        MPI_Finalized(&finalized);
        if (broken_.empty() && !finalized) MPI_Comm_free(&comm_);
    }

    int rank() const override { return rank_; }
    int size() const override { return size_; }
    const char* kind() const override { return "mpi"; }

    Status all_reduce_sum(std::span<int64_t> values) override { return all_reduce(values, MPI_SUM, "all_reduce_sum"); }
    Status all_reduce_max(std::span<int64_t> values) override { return all_reduce(values, MPI_MAX, "all_reduce_max"); }

    Status all_to_all_v(std::span<const std::byte> send, std::span<const int64_t> send_counts,
                        std::span<const int64_t> send_displs, std::span<std::byte> recv,
                        std::span<const int64_t> recv_counts, std::span<const int64_t> recv_displs) override {
        MOE_RETURN_IF_ERROR(check_usable("all_to_all_v"));
        // MPI-3 counts and displacements are int: larger ones are refused, never truncated
        // (OpenMPI 4.1 has no MPI-4 large-count _c variants).
        MOE_RETURN_IF_ERROR(check_all_to_all_v(who("all_to_all_v"), size_, send.data(), send.size(), send_counts,
                                               send_displs, recv.data(), recv.size(), recv_counts, recv_displs,
                                               INT_MAX));
        const auto n = static_cast<size_t>(size_);
        const auto me = static_cast<size_t>(rank_);
        MOE_RETURN_IF_ERROR(check_self_count(who("all_to_all_v"), rank_, send_counts, recv_counts));
        // Point-to-point rather than MPI_Ialltoallv: each arrival's size can then be checked
        // against the announced count (MPI_Get_count), which a collective does not report.
        // Messages between two ranks on one tag keep their order, so steps cannot mix.
        reqs_.clear();
        recv_peer_.clear();
        static std::byte dummy[1];  // MPI wants a valid address even for zero bytes
        for (size_t r = 0; r < n; ++r) {
            if (r == me) continue;
            std::byte* p = recv.empty() ? dummy : recv.data() + recv_displs[r];
            MPI_Request req;
            const int rc =
                MPI_Irecv(p, static_cast<int>(recv_counts[r]), MPI_BYTE, static_cast<int>(r), kA2aTag, comm_, &req);
            if (rc != MPI_SUCCESS) return post_failed("all_to_all_v", rc);
            reqs_.push_back(req);
            recv_peer_.push_back(static_cast<int>(r));
        }
        const size_t num_recvs = reqs_.size();
        for (size_t r = 0; r < n; ++r) {
            if (r == me) continue;
            const std::byte* p = send.empty() ? dummy : send.data() + send_displs[r];
            MPI_Request req;
            const int rc =
                MPI_Isend(p, static_cast<int>(send_counts[r]), MPI_BYTE, static_cast<int>(r), kA2aTag, comm_, &req);
            if (rc != MPI_SUCCESS) return post_failed("all_to_all_v", rc);
            reqs_.push_back(req);
        }
        if (send_counts[me] > 0)
            std::memmove(recv.data() + recv_displs[me], send.data() + send_displs[me],
                         static_cast<size_t>(send_counts[me]));
        statuses_.resize(reqs_.size());
        int rc = MPI_SUCCESS;
        const auto deadline = std::chrono::steady_clock::now() + options_.timeout;
        const WaitResult w = wait_until(
            [this](int* flag) {
                return MPI_Testall(static_cast<int>(reqs_.size()), reqs_.data(), flag, statuses_.data());
            },
            deadline, &rc);
        if (w == WaitResult::kTimedOut) return timed_out("all_to_all_v");
        if (w == WaitResult::kError) {
            // MPI_ERR_IN_STATUS: the failing request says why (a truncation names the peer).
            for (size_t i = 0; i < statuses_.size() && rc == MPI_ERR_IN_STATUS; ++i) {
                if (statuses_[i].MPI_ERROR != MPI_SUCCESS && statuses_[i].MPI_ERROR != MPI_ERR_PENDING) {
                    const std::string peer =
                        i < num_recvs ? fmt::format("receiving from rank {}", recv_peer_[i]) : std::string("sending");
                    return fail("all_to_all_v", unavailable(fmt::format("{} failed {}: {}", who("all_to_all_v"), peer,
                                                                        mpi_error_string(statuses_[i].MPI_ERROR))));
                }
            }
            return fail("all_to_all_v",
                        unavailable(fmt::format("{} failed: {}", who("all_to_all_v"), mpi_error_string(rc))));
        }
        // A peer that sent fewer bytes than the counts exchange announced is out of step: the
        // rows it did not send would be read as garbage.
        for (size_t i = 0; i < num_recvs; ++i) {
            int got = 0;
            MPI_Get_count(&statuses_[i], MPI_BYTE, &got);
            const int r = recv_peer_[i];
            if (got != recv_counts[static_cast<size_t>(r)])
                return fail("all_to_all_v",
                            data_loss(fmt::format("{}: rank {} sent {} bytes, the counts exchange announced {}",
                                                  who("all_to_all_v"), r, got, recv_counts[static_cast<size_t>(r)])));
        }
        return ok_status();
    }

    Status all_to_all_counts(std::span<const int64_t> in, std::span<int64_t> out) override {
        MOE_RETURN_IF_ERROR(check_usable("all_to_all_counts"));
        if (in.size() != static_cast<size_t>(size_) || out.size() != static_cast<size_t>(size_))
            return invalid_argument(fmt::format("{}: in has {} and out {} entries, the group has {} ranks",
                                                who("all_to_all_counts"), in.size(), out.size(), size_));
        // Aliasing is erroneous in MPI, and libnbc would take it as MPI_IN_PLACE (another
        // algorithm than the peers run: they hang).
        if (in.data() < out.data() + out.size() && out.data() < in.data() + in.size())
            return invalid_argument(fmt::format("{}: in and out overlap", who("all_to_all_counts")));
        MPI_Request req;
        const int rc = MPI_Ialltoall(in.data(), 1, MPI_INT64_T, out.data(), 1, MPI_INT64_T, comm_, &req);
        return finish("all_to_all_counts", rc, &req);
    }

    Status barrier() override {
        MOE_RETURN_IF_ERROR(check_usable("barrier"));
        MPI_Request req;
        const int rc = MPI_Ibarrier(comm_, &req);
        return finish("barrier", rc, &req);
    }

    void abort(const std::string& reason) override {
        // stderr directly: the process ends inside MPI_Abort, before any logger flushes.
        std::fprintf(stderr, "moeserve: rank %d of %d aborts the MPI job: %s\n", rank_, size_, reason.c_str());
        std::fflush(stderr);
        MPI_Abort(comm_, 1);
        std::_Exit(1);  // MPI_Abort does not return; if a broken library does, end anyway
    }

private:
    std::string who(const char* op) const { return fmt::format("MpiComm rank {} of {}: {}", rank_, size_, op); }

    Status check_usable(const char* op) const {
        if (!broken_.empty())
            return unavailable(
                fmt::format("{}: the communicator is broken since an earlier failure ({})", who(op), broken_));
        return ok_status();
    }

    Status all_reduce(std::span<int64_t> values, MPI_Op op, const char* name) {
        MOE_RETURN_IF_ERROR(check_usable(name));
        if (values.size() > static_cast<size_t>(INT_MAX))
            return out_of_range(fmt::format("{}: {} values exceed MPI's int count", who(name), values.size()));
        if (values.empty()) return ok_status();
        MPI_Request req;
        const int rc =
            MPI_Iallreduce(MPI_IN_PLACE, values.data(), static_cast<int>(values.size()), MPI_INT64_T, op, comm_, &req);
        return finish(name, rc, &req);
    }

    // Waits for a posted request (or reports the post's failure) and breaks the communicator on
    // any failure.
    Status post_failed(const char* op, int rc) {
        return fail(op, unavailable(fmt::format("{} failed to post: {}", who(op), mpi_error_string(rc))));
    }

    Status timed_out(const char* op) {
        std::string peers = size_ == 2 ? fmt::format("rank {}", 1 - rank_) : std::string("the other ranks");
        return fail(op, unavailable(fmt::format("{} timed out after {} ms waiting for {} (a peer is lost, stalled, or "
                                                "out of lockstep); the communicator is broken",
                                                who(op), options_.timeout.count(), peers)));
    }

    Status finish(const char* op, int post_rc, MPI_Request* req) {
        if (post_rc != MPI_SUCCESS) return post_failed(op, post_rc);
        int rc = MPI_SUCCESS;
        const auto deadline = std::chrono::steady_clock::now() + options_.timeout;
        switch (wait_one(req, deadline, &rc)) {
            case WaitResult::kDone:
                return ok_status();
            case WaitResult::kError:
                return fail(op, unavailable(fmt::format("{} failed: {}", who(op), mpi_error_string(rc))));
            case WaitResult::kTimedOut:
                break;
        }
        return timed_out(op);
    }

    Status fail(const char* op, Status st) {
        broken_ = fmt::format("{}: {}", op, st.message());
        g_broken.store(true);
        comm_log().error("{}", st.message());
        return st;
    }

    MPI_Comm comm_;
    int rank_;
    int size_;
    CommOptions options_;
    std::string broken_;  // empty while usable; else what broke it
    // all_to_all_v's pending requests (receives first) and their peers; reused between calls.
    std::vector<MPI_Request> reqs_;
    std::vector<MPI_Status> statuses_;
    std::vector<int> recv_peer_;
};

}  // namespace

bool mpi_available() {
    return true;
}

bool launched_by_mpi() {
    for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
        if (std::getenv(v) != nullptr) return true;
    return false;
}

Status mpi_init(int* argc, char*** argv) {
    int inited = 0;
    MPI_Initialized(&inited);
    if (inited) return ok_status();
    int provided = MPI_THREAD_SINGLE;
    const int rc = MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided);
    if (rc != MPI_SUCCESS) return unavailable(fmt::format("MPI_Init_thread failed (error {})", rc));
    g_initialised_here.store(true);
    if (provided < MPI_THREAD_SERIALIZED) {
        // The engine thread, not main, makes the calls: anything less is unsafe.
        return failed_precondition(
            fmt::format("the MPI library provides thread level {} but moeserve needs MPI_THREAD_SERIALIZED ({})",
                        provided, MPI_THREAD_SERIALIZED));
    }
    // Errors on the world communicator (and its duplicates) come back as codes, not aborts.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    return ok_status();
}

void mpi_mark_broken() {
    g_broken.store(true);
}

void mpi_finalize(int exit_code) {
    int inited = 0, finalized = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    if (!inited || finalized) return;
    if (g_broken.load()) {
        std::fprintf(stderr, "moeserve: a collective failed on this rank; ending the MPI job (MPI_Abort)\n");
        std::fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, exit_code != 0 ? exit_code : 1);
        std::_Exit(exit_code != 0 ? exit_code : 1);
    }
    MPI_Finalize();
}

StatusOr<std::unique_ptr<Communicator>> make_mpi_comm(const CommOptions& options) {
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) return failed_precondition("make_mpi_comm: MPI is not initialised (call mpi_init from main first)");
    if (options.timeout.count() <= 0)
        return invalid_argument(fmt::format("--comm-timeout must be positive, got {} ms", options.timeout.count()));
    MPI_Comm dup = MPI_COMM_NULL;
    MPI_Request req;
    int rc = MPI_Comm_idup(MPI_COMM_WORLD, &dup, &req);
    if (rc != MPI_SUCCESS) return unavailable(fmt::format("MPI_Comm_idup failed: {}", mpi_error_string(rc)));
    int world_rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    switch (wait_one(&req, std::chrono::steady_clock::now() + options.timeout, &rc)) {
        case WaitResult::kDone:
            break;
        case WaitResult::kError:
            g_broken.store(true);
            return unavailable(fmt::format("MPI_Comm_idup failed on rank {}: {}", world_rank, mpi_error_string(rc)));
        case WaitResult::kTimedOut:
            g_broken.store(true);
            return unavailable(
                fmt::format("rank {}: creating the communicator timed out after {} ms (not every rank "
                            "of the job joined)",
                            world_rank, options.timeout.count()));
    }
    MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN);
    int rank = 0, size = 0;
    MPI_Comm_rank(dup, &rank);
    MPI_Comm_size(dup, &size);
    return std::unique_ptr<Communicator>(std::make_unique<MpiComm>(dup, rank, size, options));
}

}  // namespace moe::comm
