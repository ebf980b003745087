// Expert parallelism for the CLI: the flags `run` and `serve` share (--expert-parallel,
// --comm-timeout, --ep-placement) and the start-up under mpirun (MPI on the main thread, the
// group, the placement each layer uses).
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "comm/communicator.h"
#include "model/config.h"
#include "model/expert_parallel.h"
#include "moe/status.h"

namespace moe::cli {

struct EpFlags {
    bool enabled = false;          // --expert-parallel
    double comm_timeout_s = 30.0;  // --comm-timeout
    std::string placement_file;    // --ep-placement
};

void add_ep_flags(CLI::App* cmd, EpFlags& flags);

// The group of this process under mpirun, or none.
struct EpGroup {
    std::unique_ptr<comm::Communicator> comm;  // null without --expert-parallel
    int rank() const { return comm ? comm->rank() : 0; }
    int size() const { return comm ? comm->size() : 1; }
};

// With --expert-parallel: MPI up on this (the main) thread and a communicator over every rank.
// Errors: kUnimplemented where the build has no MPI ("--expert-parallel needs ..."),
// kFailedPrecondition when not launched by mpirun, whatever MPI reports. Without the flag: an
// empty group (and a refusal of --ep-placement, which means nothing alone).
StatusOr<EpGroup> start_ep_group(const EpFlags& flags);

// The model's ExpertParallelOptions for `config` on `group` (the placement file read and checked
// against the model and the world size). Empty options without a group.
StatusOr<ExpertParallelOptions> ep_model_options(const EpFlags& flags, EpGroup& group, const ModelConfig& config);

// Ends MPI on the main thread after every user of the group is gone (MPI_Abort with exit_code
// when the group broke; see mpi_finalize). No-op without MPI.
void finish_ep_group(EpGroup& group, int exit_code);

}  // namespace moe::cli
