#include "cli/ep_launch.h"

#include <chrono>
#include <cmath>

#include "comm/mpi_comm.h"
#include "core/logging.h"
#include "model/ep_placement.h"

namespace moe::cli {

void add_ep_flags(CLI::App* cmd, EpFlags& f) {
    cmd->add_flag("--expert-parallel", f.enabled,
                  "expert parallelism over the ranks of `mpirun -np N` (attention data-parallel, routed experts "
                  "sharded); needs a build with MPI")
        ->envname("MOESERVE_EXPERT_PARALLEL");
    cmd->add_option("--comm-timeout", f.comm_timeout_s,
                    "seconds a collective of the expert-parallel group waits for its peers before the group is "
                    "declared failed")
        ->capture_default_str()
        ->check(CLI::Range(0.001, 86400.0))
        ->envname("MOESERVE_COMM_TIMEOUT");
    cmd->add_option("--ep-placement", f.placement_file,
                    "expert placement file (moeserve ep-plan): which rank holds which experts, with redundant "
                    "copies of hot ones; default contiguous ranges")
        ->envname("MOESERVE_EP_PLACEMENT");
}

StatusOr<EpGroup> start_ep_group(const EpFlags& f) {
    EpGroup g;
    if (!f.enabled) {
        if (!f.placement_file.empty()) return invalid_argument("--ep-placement needs --expert-parallel");
        return g;
    }
    if (!comm::mpi_available())
        return unimplemented(
            "--expert-parallel needs MPI, and this build has none (install libopenmpi-dev and rebuild; CMake option "
            "MOE_MPI)");
    if (!comm::launched_by_mpi())
        return failed_precondition(
            "--expert-parallel: not started by mpirun (run `mpirun -np N moeserve ... --expert-parallel`; in a "
            "container add --allow-run-as-root, with more ranks than cores --oversubscribe)");
    MOE_RETURN_IF_ERROR(comm::mpi_init(nullptr, nullptr));
    const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(std::llround(f.comm_timeout_s * 1000.0)));
    MOE_ASSIGN_OR_RETURN(g.comm, comm::make_mpi_comm({.timeout = timeout}));
    log::model().info("expert parallelism: rank {} of {} over {}, collectives time out after {:.3f} s", g.rank(),
                      g.size(), g.comm->kind(), f.comm_timeout_s);
    return g;
}

StatusOr<ExpertParallelOptions> ep_model_options(const EpFlags& f, EpGroup& g, const ModelConfig& c) {
    ExpertParallelOptions o;
    if (!g.comm) return o;
    o.comm = g.comm.get();
    if (f.placement_file.empty()) return o;
    if (c.num_experts < 1) return invalid_argument("--ep-placement: " + c.architecture + " has no routed experts");
    MOE_ASSIGN_OR_RETURN(EpPlacement p, EpPlacement::load(f.placement_file, static_cast<int>(c.num_layers),
                                                          static_cast<int>(c.num_experts), g.size()));
    for (int l = 0; l < p.num_layers(); ++l) {
        const LayerPlacement& lp = p.layer(l);
        std::vector<std::vector<int32_t>> per_rank;
        for (int r = 0; r < lp.world_size(); ++r) {
            const auto ids = lp.local_experts(r);
            per_rank.emplace_back(ids.begin(), ids.end());
        }
        MOE_ASSIGN_OR_RETURN(ExpertPlacement ep, ExpertPlacement::from_rank_lists(c.num_experts, per_rank));
        o.placement.push_back(std::move(ep));
    }
    return o;
}

void finish_ep_group(EpGroup& g, int exit_code) {
    if (!g.comm) return;
    g.comm.reset();
    comm::mpi_finalize(exit_code == 0 ? 1 : exit_code);
}

}  // namespace moe::cli
