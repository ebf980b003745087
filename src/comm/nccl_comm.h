// NcclComm: the Communicator over NCCL, for ranks that each drive one GPU.
//
// Built (target moe_comm_nccl) only when the CUDA backend is enabled and CMake finds NCCL in
// the CUDA toolkit or the system; it links the CUDA runtime and libnccl, never libcuda.
// **Compiled here, never executed** (no GPU on the build machines); its test skips visibly
// without a device.
//
// Buffers of all_to_all_v are DEVICE pointers (spans over device memory: the sizes are checked,
// the bytes never touched by the host). all_reduce_* and all_to_all_counts take HOST spans, as
// the contract says; they go through a small device buffer of the communicator's own.
//
// Time bounds: the communicator is created non-blocking (ncclConfig_t::blocking = 0); every
// collective is enqueued on the communicator's own stream and polled (cudaStreamQuery and
// ncclCommGetAsyncError) until CommOptions::timeout. Past it, or on an asynchronous NCCL error,
// the communicator is aborted (ncclCommAbort, which frees the GPU resources held by the stuck
// kernels) and every later call returns kUnavailable without entering NCCL.
//
// all_to_all_v: ncclGroupStart, one ncclSend/ncclRecv per peer with a non-zero count (both
// sides know the count from the counts exchange; a disagreement hangs and is caught by the
// timeout), a device-to-device copy for the rank's own slice, ncclGroupEnd.
#pragma once

#include <memory>

#include "comm/communicator.h"

namespace moe::comm {

// A group of one on `device` (no bootstrap needed): the N = 1 path, which exercises the whole
// NCCL call sequence on a single GPU. kUnavailable when no device answers.
StatusOr<std::unique_ptr<Communicator>> make_nccl_comm_single(int device, const CommOptions& options);

// One rank per MPI process on `device` (usually the node-local rank): rank 0 creates the
// ncclUniqueId and broadcasts it over MPI (bounded by the timeout). Needs mpi_init first and a
// build with MPI; kUnimplemented otherwise.
StatusOr<std::unique_ptr<Communicator>> make_nccl_comm_mpi(int device, const CommOptions& options);

}  // namespace moe::comm
