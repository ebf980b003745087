// Failure cases of MpiComm, one per mode, run under mpirun by run_mpi_fault.sh, which asserts on
// the exit status, the wall time and the messages:
//   timeout  rank 1 skips a collective (sleeps past the timeout): rank 0's all_reduce returns
//            UNAVAILABLE within the timeout, its next call fails fast, and the job ends.
//   kill     rank 1 raises SIGKILL between collectives; rank 0 keeps exchanging data. Under
//            mpirun's defaults mpirun ends the job; with --enable-recovery rank 0's collective
//            returns UNAVAILABLE within the timeout.
//   abort    rank 0 calls abort(reason) while rank 1 waits in a collective: the job ends at once
//            (well inside the timeout) with the reason printed, never a hang.
//   lying    rank 1 sends fewer, then more bytes than rank 0 was announced: rank 0 reports
//            DATA_LOSS naming the peer and both counts, then MPI's truncation, never garbage.
// Lines for the driver start with "FAULT ".
#include <fmt/format.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "comm/mpi_comm.h"

using namespace moe;
using namespace moe::comm;

namespace {

void say(const std::string& line) {
    std::fprintf(stdout, "FAULT %s\n", line.c_str());
    std::fflush(stdout);
}

int64_t ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
}

// One EP-like step: counts then 4 KiB to every rank.
Status exchange(Communicator& c) {
    const int n = c.size();
    std::vector<int64_t> sc(n, 4096), sd(n), rc(n), rd(n);
    for (int r = 0; r < n; ++r) sd[r] = rd[r] = 4096 * r;
    std::vector<std::byte> send(4096 * n, std::byte{1}), recv(4096 * n);
    MOE_RETURN_IF_ERROR(c.all_to_all_counts(sc, rc));
    return c.all_to_all_v(send, sc, sd, recv, rc, rd);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s timeout|kill|abort|lying TIMEOUT_MS\n", argv[0]);
        return 2;
    }
    const std::string mode = argv[1];
    const int timeout_ms = std::atoi(argv[2]);
    Status st = mpi_init(&argc, &argv);
    if (!st.ok()) {
        std::fprintf(stderr, "mpi_init: %s\n", st.to_string().c_str());
        return 2;
    }
    CommOptions opts;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    auto comm_or = make_mpi_comm(opts);
    if (!comm_or.ok()) {
        std::fprintf(stderr, "make_mpi_comm: %s\n", comm_or.status().to_string().c_str());
        mpi_finalize(3);
        return 3;
    }
    std::unique_ptr<Communicator> comm = std::move(*comm_or);
    const int me = comm->rank();
    int exit_code = 0;
    // The collectives run on a second thread, as the engine's do.
    std::thread engine([&] {
        if (mode == "timeout") {
            st = exchange(*comm);  // in lockstep first
            if (!st.ok()) {
                say(fmt::format("rank {} warm-up failed: {}", me, st.to_string()));
                exit_code = 4;
                return;
            }
            if (me == 1) {
                say("rank 1 skips the all_reduce");
                std::this_thread::sleep_for(std::chrono::milliseconds(3 * timeout_ms + 2000));
                say("rank 1 woke up");  // never printed when rank 0 aborts the job first
                return;
            }
            std::vector<int64_t> v{1};
            const auto t0 = std::chrono::steady_clock::now();
            st = comm->all_reduce_sum(v);
            say(fmt::format("rank {} all_reduce_sum returned after {} ms: {}", me, ms_since(t0), st.to_string()));
            const auto t1 = std::chrono::steady_clock::now();
            Status again = comm->barrier();
            say(fmt::format("rank {} next call returned after {} ms: {}", me, ms_since(t1), again.to_string()));
            exit_code = st.ok() ? 0 : 5;
        } else if (mode == "kill") {
            for (int step = 0;; ++step) {
                if (me == 1 && step == 20) {
                    say("rank 1 raises SIGKILL");
                    std::raise(SIGKILL);
                }
                const auto t0 = std::chrono::steady_clock::now();
                st = exchange(*comm);
                if (!st.ok()) {
                    say(fmt::format("rank {} step {} failed after {} ms: {}", me, step, ms_since(t0), st.to_string()));
                    exit_code = 5;
                    return;
                }
                if (step > 100000) return;  // never: the peer dies at step 20
            }
        } else if (mode == "abort") {
            // Rank 0 fails mid-layer and aborts the group; rank 1 is waiting in a collective.
            if (me == 0) {
                std::this_thread::sleep_for(std::chrono::milliseconds(300));
                say("rank 0 aborts");
                comm->abort("expert kernel failed in layer 3 (test)");
            }
            std::vector<int64_t> v{1};
            st = comm->all_reduce_sum(v);
            say(fmt::format("rank {} all_reduce_sum returned: {}", me, st.to_string()));  // never: the job ends
            exit_code = 5;
        } else if (mode == "lying") {
            // Rank 1 sends other byte counts than rank 0 was told, on two fresh communicators:
            // fewer bytes (DATA_LOSS on arrival), then more (MPI's truncation error).
            for (int64_t sent : {4, 16}) {
                auto c = make_mpi_comm(opts);
                if (!c.ok()) {
                    say(fmt::format("rank {} make_mpi_comm: {}", me, c.status().to_string()));
                    exit_code = 4;
                    return;
                }
                std::vector<int64_t> z(2, 0), sc(2, 0), rc(2, 0), sd(2, 0), rd(2, 0);
                std::vector<std::byte> send(16, std::byte{7}), recv(16);
                if (me == 1) sc[0] = sent;
                if (me == 0) rc[1] = 8;
                Status s2 = (*c)->all_to_all_v(send, sc, sd, recv, rc, rd);
                say(fmt::format("rank {} received {} announced as 8: {}", me, sent, s2.to_string()));
                if (me == 0 && s2.ok()) exit_code = 6;  // the lie went unnoticed
                if (me == 0 && !s2.ok() && exit_code == 0) exit_code = 5;
                c->reset();
            }
        } else {
            say("unknown mode " + mode);
            exit_code = 2;
        }
    });
    engine.join();
    comm.reset();
    say(fmt::format("rank {} exits with {}", me, exit_code));
    mpi_finalize(exit_code == 0 ? 1 : exit_code);
    return exit_code;
}
