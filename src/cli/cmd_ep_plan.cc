// `moeserve ep-plan`: an expert placement (EPLB) from recorded per-expert token counts, for
// `--ep-placement`. Hot experts get the redundant slots; replicas spread over the ranks.
#include <fmt/format.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "model/ep_placement.h"

namespace moe::cli {
namespace {

struct EpPlanArgs {
    std::string counts;
    int world_size = 0;
    int redundant = 0;
    std::string output;
};

Status run(const EpPlanArgs& a) {
    if (a.world_size < 1 || a.world_size > kMaxEpWorldSize)
        return invalid_argument(fmt::format("--world-size {}: must be in [1, {}]", a.world_size, kMaxEpWorldSize));
    MOE_ASSIGN_OR_RETURN(ExpertCounts counts, load_expert_counts(a.counts));
    MOE_ASSIGN_OR_RETURN(EpPlacement plan, plan_placement(counts, a.world_size, a.redundant));
    // Per planned layer: how far the busiest rank is above the mean, before and after.
    MOE_ASSIGN_OR_RETURN(LayerPlacement base, LayerPlacement::contiguous(counts.num_experts, a.world_size));
    for (size_t i = 0; i < counts.layer_ids.size(); ++i) {
        const int l = counts.layer_ids[i];
        fmt::print(stderr, "layer {}: busiest rank at {:.3f}x the mean with contiguous ranges, {:.3f}x planned\n", l,
                   placement_imbalance(base, counts.counts[i]), placement_imbalance(plan.layer(l), counts.counts[i]));
    }
    const std::string text = plan.to_json().dump(1) + "\n";
    if (a.output == "-") {
        std::fwrite(text.data(), 1, text.size(), stdout);
        return ok_status();
    }
    std::ofstream out(a.output, std::ios::binary | std::ios::trunc);
    if (!out) return not_found(fmt::format("-o: cannot write {}", a.output));
    out << text;
    out.close();
    if (!out) return data_loss(fmt::format("-o: writing {} failed", a.output));
    fmt::print(stderr, "wrote {} ({} ranks, {} redundant slots per planned layer, {} of {} layers planned)\n", a.output,
               a.world_size, a.redundant, counts.layer_ids.size(), counts.num_layers);
    return ok_status();
}

Registrar reg("ep-plan", [](CLI::App& app, int& exit_code) {
    auto args = std::make_shared<EpPlanArgs>();
    CLI::App* cmd = app.add_subcommand(
        "ep-plan", "Plan an expert placement (redundant copies of hot experts) from recorded token counts");
    cmd->add_option("--counts", args->counts,
                    "JSON of per-layer per-expert token counts: {\"num_layers\", \"num_experts\", \"layers\": "
                    "[{\"layer\", \"counts\"}]}")
        ->required();
    cmd->add_option("--world-size", args->world_size, "ranks of the expert-parallel group (mpirun -np)")->required();
    cmd->add_option("--redundant", args->redundant, "extra expert slots per layer, given to the hottest experts")
        ->default_val(0);
    cmd->add_option("-o,--output", args->output, "where to write the placement JSON (- for stdout)")->required();
    cmd->callback([args, &exit_code] {
        Status st = run(*args);
        if (!st.ok()) {
            fmt::print(stderr, "ep-plan: {}\n", st.to_string());
            exit_code = 1;
        }
    });
});

}  // namespace
}  // namespace moe::cli
