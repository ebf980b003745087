// Communicator: the collectives expert parallelism needs, over an existing library.
//
// One Communicator is one rank's handle on a group of `size()` ranks (an expert-parallel group).
// Implementations: LocalComm (size 1, no library), MpiComm (OpenMPI, MPI_THREAD_SERIALIZED: the
// engine thread, not main, makes every call), NcclComm (NCCL from the CUDA toolkit, device
// buffers). Each is built only where its library is found; factories live beside them.
//
// ## Contract
// - Every rank of the group calls the same collectives in the same order (lockstep). A rank with
//   nothing to send still calls, with zero counts.
// - Collectives are bounded in time: each waits at most `timeout` (CommOptions::timeout, the
//   `--comm-timeout` flag) for its peers; past it, or when a peer is lost, the call returns
//   UNAVAILABLE naming the collective, the rank and the peer(s) it waited on, and the
//   communicator is unusable from then on (every later call fails fast).
// - abort(reason) ends the whole group: the other ranks' pending and later collectives fail with
//   UNAVAILABLE quoting the reason where the library can carry it (MPI_Abort ends every process
//   of the job; a rank's error mid-layer calls it after logging).
// - Buffers are the caller's; counts and displacements are in bytes and checked before any
//   byte moves (sum of counts within the buffer, non-negative, displacements inside it). What a
//   peer sends is checked on arrival against what the counts exchange announced.
// - Not thread-safe: one thread per communicator.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "moe/status.h"

namespace moe::comm {

struct CommOptions {
    std::chrono::milliseconds timeout{30000};  // per collective; --comm-timeout
};

class Communicator {
public:
    virtual ~Communicator() = default;

    virtual int rank() const = 0;
    virtual int size() const = 0;
    // "local", "mpi", "nccl": for logs and GetServerInfo.
    virtual const char* kind() const = 0;

    // Element-wise sum (in place) of `values` across every rank: small integer vectors
    // (per-step token counts, per-expert loads). Every rank passes the same length.
    virtual Status all_reduce_sum(std::span<int64_t> values) = 0;
    // Element-wise max, same contract.
    virtual Status all_reduce_max(std::span<int64_t> values) = 0;

    // All-to-all with variable byte counts. send_counts[r] bytes starting at
    // send + send_displs[r] go to rank r; recv_counts[r] bytes from rank r land at
    // recv + recv_displs[r]. All four spans have size() entries. The caller learns recv_counts
    // beforehand (an all_to_all of the counts, below).
    virtual Status all_to_all_v(std::span<const std::byte> send, std::span<const int64_t> send_counts,
                                std::span<const int64_t> send_displs, std::span<std::byte> recv,
                                std::span<const int64_t> recv_counts, std::span<const int64_t> recv_displs) = 0;

    // All-to-all of one int64 per rank: out[r] = what rank r put in its in[this rank].
    // Both spans have size() entries. Used to exchange row counts before all_to_all_v.
    virtual Status all_to_all_counts(std::span<const int64_t> in, std::span<int64_t> out) = 0;

    virtual Status barrier() = 0;

    // Ends the group with `reason` (logged by the caller first). Does not return for MPI.
    virtual void abort(const std::string& reason) = 0;
};

// The size-1 group: every collective is a copy or a no-op. No library.
std::unique_ptr<Communicator> make_local_comm();

}  // namespace moe::comm
