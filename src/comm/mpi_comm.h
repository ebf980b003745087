// MpiComm: the Communicator over OpenMPI, for ranks that are CPU processes (`mpirun -np N`).
//
// Built only where CMake finds MPI (option MOE_MPI, AUTO by default); without it every function
// below still exists: mpi_available() is false and the others return kUnimplemented saying the
// build left MPI out, so callers compile and fail clearly either way.
//
// ## Threads
// MPI is initialised with MPI_THREAD_SERIALIZED: `mpi_init` and `mpi_finalize` run on the main
// thread (before the engine thread starts and after it has been joined); the collectives run on
// the engine thread. Never two threads in MPI at once.
//
// ## Time bounds
// Every collective is non-blocking (MPI_Iallreduce, MPI_Ialltoall(v), MPI_Ibarrier) and polled
// with MPI_Test against CommOptions::timeout. Past it the call returns kUnavailable naming the
// collective, the rank and the timeout, and the communicator is broken: every later call fails
// fast without entering MPI. The timed-out request cannot be cancelled (MPI forbids cancelling
// collectives), so a late peer could still write into the receive buffer during a later MPI
// call; hence a broken process makes none: `mpi_finalize` then ends the job with MPI_Abort
// instead of MPI_Finalize (which would wait for the dead peer forever).
//
// ## Lost peers
// Under mpirun's defaults (OpenMPI 4.1) a rank that dies (signal, or exit without
// MPI_Finalize) makes mpirun kill every other rank at once and print which rank died and how;
// mpirun exits non-zero. With `mpirun --enable-recovery` the survivors live on and their next
// collective returns kUnavailable within the timeout instead. Errors MPI reports are
// kUnavailable/kInternal Statuses (MPI_ERRORS_RETURN on the communicator), never an abort
// inside the library.
#pragma once

#include <memory>

#include "comm/communicator.h"

namespace moe::comm {

// True when this build has MpiComm.
bool mpi_available();

// True when this process was started by mpirun/mpiexec (OpenMPI's OMPI_COMM_WORLD_SIZE, or the
// PMI/PMIx variables other launchers set). Reads the environment; call once at start-up.
bool launched_by_mpi();

// MPI_Init_thread(MPI_THREAD_SERIALIZED) on the calling (main) thread. Idempotent. Fails with
// kFailedPrecondition when the library offers less than SERIALIZED, kUnimplemented without MPI.
Status mpi_init(int* argc, char*** argv);

// Ends MPI on the main thread after every communicator is destroyed and the engine thread
// joined. When a communicator broke (timeout, lost peer, MPI error) it calls MPI_Abort with
// `exit_code` (non-zero) instead: the job cannot finish cleanly, and waiting would hang.
// No-op when MPI was never initialised or the build has no MPI.
void mpi_finalize(int exit_code = 1);

// Marks the job as failed on this rank (as a broken communicator does): mpi_finalize will then
// MPI_Abort. For failures outside a communicator that leave an MPI request pending (the NCCL
// bootstrap's broadcast) or a rank that cannot go on mid-step.
void mpi_mark_broken();

// A communicator over every rank of the job (a duplicate of MPI_COMM_WORLD with
// MPI_ERRORS_RETURN). Needs mpi_init first. The duplication itself is bounded by
// `options.timeout` like any collective.
StatusOr<std::unique_ptr<Communicator>> make_mpi_comm(const CommOptions& options);

}  // namespace moe::comm
