// NcclComm: NCCL collectives on the communicator's own stream, polled against a deadline (see
// nccl_comm.h). Compiled, never executed on the build machines.
#include "comm/nccl_comm.h"

#include <cuda_runtime.h>
#include <fmt/format.h>
#include <nccl.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "comm/comm_check.h"
#include "comm/mpi_comm.h"
#include "core/logging.h"

#ifdef MOE_NCCL_WITH_MPI
#include <mpi.h>
#endif

namespace moe::comm {
namespace {

using Clock = std::chrono::steady_clock;

spdlog::logger& comm_log() {
    static auto l = log::get("comm");
    return *l;
}

Status cuda_status(cudaError_t e, const char* what) {
    return unavailable(fmt::format("{}: CUDA error {} ({})", what, cudaGetErrorName(e), cudaGetErrorString(e)));
}

Status nccl_status(ncclResult_t r, const char* what) {
    return unavailable(fmt::format("{}: NCCL error {} ({})", what, static_cast<int>(r), ncclGetErrorString(r)));
}

// No device: any error from cudaGetDeviceCount (no driver, no GPU) or a device index past it.
Status check_device(int device) {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) return unavailable(fmt::format("no CUDA device: {}", cudaGetErrorString(e)));
    if (device < 0 || device >= n)
        return unavailable(fmt::format("no CUDA device {} ({} device(s) visible)", device, n));
    return ok_status();
}

// Waits until an initialisation or an enqueued group of the non-blocking communicator leaves
// ncclInProgress.
Status wait_nccl_ready(ncclComm_t comm, Clock::time_point deadline, const char* what) {
    for (;;) {
        ncclResult_t state = ncclSuccess;
        const ncclResult_t r = ncclCommGetAsyncError(comm, &state);
        if (r != ncclSuccess) return nccl_status(r, what);
        if (state == ncclSuccess) return ok_status();
        if (state != ncclInProgress) return nccl_status(state, what);
        if (Clock::now() >= deadline) return unavailable(fmt::format("{}: timed out", what));
        std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
}

class NcclComm final : public Communicator {
public:
    NcclComm(ncclComm_t comm, cudaStream_t stream, int64_t* dev_scratch, int device, int rank, int size,
             CommOptions options)
        : comm_(comm),
          stream_(stream),
          scratch_(dev_scratch),
          device_(device),
          rank_(rank),
          size_(size),
          options_(options) {}

    ~NcclComm() override {
        cudaSetDevice(device_);
        if (broken_.empty()) {
            ncclCommDestroy(comm_);
        } else if (!aborted_) {
            ncclCommAbort(comm_);
        }
        cudaFree(scratch_);
        cudaStreamDestroy(stream_);
    }

    int rank() const override { return rank_; }
    int size() const override { return size_; }
    const char* kind() const override { return "nccl"; }

    Status all_reduce_sum(std::span<int64_t> values) override { return all_reduce(values, ncclSum, "all_reduce_sum"); }
    Status all_reduce_max(std::span<int64_t> values) override { return all_reduce(values, ncclMax, "all_reduce_max"); }

    Status all_to_all_v(std::span<const std::byte> send, std::span<const int64_t> send_counts,
                        std::span<const int64_t> send_displs, std::span<std::byte> recv,
                        std::span<const int64_t> recv_counts, std::span<const int64_t> recv_displs) override {
        MOE_RETURN_IF_ERROR(check_usable("all_to_all_v"));
        MOE_RETURN_IF_ERROR(check_all_to_all_v(who("all_to_all_v"), size_, send.data(), send.size(), send_counts,
                                               send_displs, recv.data(), recv.size(), recv_counts, recv_displs,
                                               INT64_MAX));
        const auto me = static_cast<size_t>(rank_);
        MOE_RETURN_IF_ERROR(check_self_count(who("all_to_all_v"), rank_, send_counts, recv_counts));
        MOE_RETURN_IF_ERROR(set_device("all_to_all_v"));
        if (send_counts[me] > 0) {
            const cudaError_t e =
                cudaMemcpyAsync(recv.data() + recv_displs[me], send.data() + send_displs[me],
                                static_cast<size_t>(send_counts[me]), cudaMemcpyDeviceToDevice, stream_);
            if (e != cudaSuccess) return fail("all_to_all_v", cuda_status(e, "all_to_all_v: own slice"));
        }
        ncclResult_t r = ncclGroupStart();
        for (int p = 0; p < size_ && r == ncclSuccess; ++p) {
            if (p == rank_) continue;
            const auto q = static_cast<size_t>(p);
            if (send_counts[q] > 0)
                r = ncclSend(send.data() + send_displs[q], static_cast<size_t>(send_counts[q]), ncclUint8, p, comm_,
                             stream_);
            if (r == ncclSuccess && recv_counts[q] > 0)
                r = ncclRecv(recv.data() + recv_displs[q], static_cast<size_t>(recv_counts[q]), ncclUint8, p, comm_,
                             stream_);
        }
        const ncclResult_t end = ncclGroupEnd();
        if (r != ncclSuccess) return fail("all_to_all_v", nccl_status(r, "all_to_all_v: ncclSend/ncclRecv"));
        return finish("all_to_all_v", end);
    }

    Status all_to_all_counts(std::span<const int64_t> in, std::span<int64_t> out) override {
        MOE_RETURN_IF_ERROR(check_usable("all_to_all_counts"));
        if (in.size() != static_cast<size_t>(size_) || out.size() != static_cast<size_t>(size_))
            return invalid_argument(fmt::format("{}: in has {} and out {} entries, the group has {} ranks",
                                                who("all_to_all_counts"), in.size(), out.size(), size_));
        MOE_RETURN_IF_ERROR(set_device("all_to_all_counts"));
        MOE_RETURN_IF_ERROR(ensure_scratch(2 * in.size(), "all_to_all_counts"));
        int64_t* d_in = scratch_;
        int64_t* d_out = scratch_ + in.size();
        cudaError_t e = cudaMemcpyAsync(d_in, in.data(), in.size_bytes(), cudaMemcpyHostToDevice, stream_);
        if (e != cudaSuccess) return fail("all_to_all_counts", cuda_status(e, "all_to_all_counts: upload"));
        ncclResult_t r = ncclGroupStart();
        for (int p = 0; p < size_ && r == ncclSuccess; ++p) {
            r = ncclSend(d_in + p, 1, ncclInt64, p, comm_, stream_);
            if (r == ncclSuccess) r = ncclRecv(d_out + p, 1, ncclInt64, p, comm_, stream_);
        }
        const ncclResult_t end = ncclGroupEnd();
        if (r != ncclSuccess) return fail("all_to_all_counts", nccl_status(r, "all_to_all_counts"));
        MOE_RETURN_IF_ERROR(finish_enqueue("all_to_all_counts", end));
        e = cudaMemcpyAsync(out.data(), d_out, out.size_bytes(), cudaMemcpyDeviceToHost, stream_);
        if (e != cudaSuccess) return fail("all_to_all_counts", cuda_status(e, "all_to_all_counts: download"));
        return wait_stream("all_to_all_counts");
    }

    Status barrier() override {
        int64_t one = 1;
        return all_reduce(std::span<int64_t>(&one, 1), ncclSum, "barrier");
    }

    void abort(const std::string& reason) override {
        std::fprintf(stderr, "moeserve: rank %d of %d aborts the NCCL group: %s\n", rank_, size_, reason.c_str());
        std::fflush(stderr);
        if (!aborted_) {
            cudaSetDevice(device_);
            ncclCommAbort(comm_);
            aborted_ = true;
        }
        if (broken_.empty()) broken_ = "aborted: " + reason;
#ifdef MOE_NCCL_WITH_MPI
        // Launched by mpirun: end every process of the job, as MpiComm::abort does.
        int inited = 0, finalized = 0;
        MPI_Initialized(&inited);
        MPI_Finalized(&finalized);
        if (inited && !finalized) MPI_Abort(MPI_COMM_WORLD, 1);
#endif
        std::_Exit(1);
    }

private:
    std::string who(const char* op) const {
        return fmt::format("NcclComm rank {} of {}: {}", rank_, size_, op);
    }

    Status check_usable(const char* op) const {
        if (!broken_.empty())
            return unavailable(
                fmt::format("{}: the communicator is broken since an earlier failure ({})", who(op), broken_));
        return ok_status();
    }

    Status set_device(const char* op) {
        const cudaError_t e = cudaSetDevice(device_);
        if (e != cudaSuccess) return fail(op, cuda_status(e, op));
        return ok_status();
    }

    Status ensure_scratch(size_t n, const char* op) {
        if (n <= scratch_len_) return ok_status();
        // Wait for work that may still use the old buffer before freeing it.
        MOE_RETURN_IF_ERROR(wait_stream(op));
        cudaFree(scratch_);
        scratch_ = nullptr;
        scratch_len_ = 0;
        const cudaError_t e = cudaMalloc(&scratch_, n * sizeof(int64_t));
        if (e != cudaSuccess) return fail(op, cuda_status(e, "scratch buffer"));
        scratch_len_ = n;
        return ok_status();
    }

    Status all_reduce(std::span<int64_t> values, ncclRedOp_t op, const char* name) {
        MOE_RETURN_IF_ERROR(check_usable(name));
        if (values.empty()) return ok_status();
        MOE_RETURN_IF_ERROR(set_device(name));
        MOE_RETURN_IF_ERROR(ensure_scratch(values.size(), name));
        cudaError_t e = cudaMemcpyAsync(scratch_, values.data(), values.size_bytes(), cudaMemcpyHostToDevice, stream_);
        if (e != cudaSuccess) return fail(name, cuda_status(e, "all_reduce: upload"));
        const ncclResult_t r = ncclAllReduce(scratch_, scratch_, values.size(), ncclInt64, op, comm_, stream_);
        MOE_RETURN_IF_ERROR(finish_enqueue(name, r));
        e = cudaMemcpyAsync(values.data(), scratch_, values.size_bytes(), cudaMemcpyDeviceToHost, stream_);
        if (e != cudaSuccess) return fail(name, cuda_status(e, "all_reduce: download"));
        return wait_stream(name);
    }

    // After an enqueue that returned `r` (ncclInProgress is normal for a non-blocking comm).
    Status finish_enqueue(const char* op, ncclResult_t r) {
        if (r != ncclSuccess && r != ncclInProgress) return fail(op, nccl_status(r, op));
        if (r == ncclInProgress) {
            Status st = wait_nccl_ready(comm_, Clock::now() + options_.timeout, op);
            if (!st.ok()) return fail(op, st);
        }
        return ok_status();
    }

    Status finish(const char* op, ncclResult_t r) {
        MOE_RETURN_IF_ERROR(finish_enqueue(op, r));
        return wait_stream(op);
    }

    // Polls the stream and NCCL's asynchronous error until the deadline.
    Status wait_stream(const char* op) {
        const auto deadline = Clock::now() + options_.timeout;
        for (uint64_t it = 0;; ++it) {
            const cudaError_t e = cudaStreamQuery(stream_);
            if (e == cudaSuccess) return ok_status();
            if (e != cudaErrorNotReady) return fail(op, cuda_status(e, op));
            ncclResult_t state = ncclSuccess;
            if (ncclCommGetAsyncError(comm_, &state) == ncclSuccess && state != ncclSuccess && state != ncclInProgress)
                return fail(op, nccl_status(state, op));
            if (Clock::now() >= deadline)
                return fail(op, unavailable(fmt::format("{} timed out after {} ms waiting for the other ranks (a peer "
                                                        "is lost, stalled, or out of lockstep); the communicator is "
                                                        "aborted",
                                                        who(op), options_.timeout.count())));
            if (it > 1000) std::this_thread::sleep_for(std::chrono::microseconds(20));
        }
    }

    // Breaks the communicator: aborts it so the stuck kernels release the GPU.
    Status fail(const char* op, Status st) {
        broken_ = fmt::format("{}: {}", op, st.message());
        if (!aborted_) {
            ncclCommAbort(comm_);
            aborted_ = true;
        }
        comm_log().error("{}", st.message());
        return st;
    }

    ncclComm_t comm_;
    cudaStream_t stream_;
    int64_t* scratch_;
    size_t scratch_len_ = 0;
    int device_;
    int rank_;
    int size_;
    CommOptions options_;
    std::string broken_;
    bool aborted_ = false;
};

// Creates the non-blocking communicator for `rank` of `size` from `id` and waits for it.
StatusOr<std::unique_ptr<Communicator>> make_from_id(const ncclUniqueId& id, int rank, int size, int device,
                                                     const CommOptions& options) {
    if (options.timeout.count() <= 0)
        return invalid_argument(fmt::format("--comm-timeout must be positive, got {} ms", options.timeout.count()));
    cudaError_t e = cudaSetDevice(device);
    if (e != cudaSuccess) return cuda_status(e, "cudaSetDevice");
    cudaStream_t stream = nullptr;
    e = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) return cuda_status(e, "cudaStreamCreate");
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;  // every call returns at once; we poll against the deadline
    ncclComm_t comm = nullptr;
    ncclResult_t r = ncclCommInitRankConfig(&comm, size, id, rank, &config);
    if (r != ncclSuccess && r != ncclInProgress) {
        cudaStreamDestroy(stream);
        return nccl_status(r, "ncclCommInitRankConfig");
    }
    Status st = wait_nccl_ready(comm, Clock::now() + options.timeout,
                                "creating the NCCL communicator (not every rank joined in time)");
    if (!st.ok()) {
        ncclCommAbort(comm);
        cudaStreamDestroy(stream);
        return st;
    }
    auto c = std::make_unique<NcclComm>(comm, stream, nullptr, device, rank, size, options);
    return std::unique_ptr<Communicator>(std::move(c));
}

}  // namespace

StatusOr<std::unique_ptr<Communicator>> make_nccl_comm_single(int device, const CommOptions& options) {
    MOE_RETURN_IF_ERROR(check_device(device));
    ncclUniqueId id;
    const ncclResult_t r = ncclGetUniqueId(&id);
    if (r != ncclSuccess) return nccl_status(r, "ncclGetUniqueId");
    return make_from_id(id, 0, 1, device, options);
}

StatusOr<std::unique_ptr<Communicator>> make_nccl_comm_mpi(int device, const CommOptions& options) {
#ifdef MOE_NCCL_WITH_MPI
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited)
        return failed_precondition("make_nccl_comm_mpi: MPI is not initialised (call mpi_init from main first)");
    MOE_RETURN_IF_ERROR(check_device(device));
    int rank = 0, size = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    ncclUniqueId id;
    if (rank == 0) {
        const ncclResult_t r = ncclGetUniqueId(&id);
        // Rank 0 cannot tell the others; they time out in the broadcast below.
        if (r != ncclSuccess) return nccl_status(r, "ncclGetUniqueId");
    }
    // The id travels as bytes; the broadcast is bounded by the timeout like every collective.
    MPI_Request req;
    int rc = MPI_Ibcast(&id, sizeof(id), MPI_BYTE, 0, MPI_COMM_WORLD, &req);
    if (rc != MPI_SUCCESS) return unavailable(fmt::format("rank {}: broadcasting the ncclUniqueId failed", rank));
    const auto deadline = Clock::now() + options.timeout;
    for (int flag = 0; !flag;) {
        rc = MPI_Test(&req, &flag, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) return unavailable(fmt::format("rank {}: broadcasting the ncclUniqueId failed", rank));
        if (!flag && Clock::now() >= deadline) {
            mpi_mark_broken();  // the broadcast stays pending: MPI_Finalize would wait on it
            return unavailable(fmt::format("rank {}: the ncclUniqueId broadcast from rank 0 timed out after {} ms",
                                           rank, options.timeout.count()));
        }
        if (!flag) std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    return make_from_id(id, rank, size, device, options);
#else
    (void)device;
    (void)options;
    return unimplemented("make_nccl_comm_mpi: this build has no MPI to bootstrap NCCL over (MOE_MPI)");
#endif
}

}  // namespace moe::comm
