// `moeserve ep-plan`: an expert placement (EPLB) from recorded per-expert token counts, for
// `--ep-placement`. Hot experts get the redundant slots; replicas spread over the ranks.
//
//   moeserve ep-plan --counts counts.json --world-size 4 --redundant 8 -o placement.json
//   moeserve ep-plan --servers h:50051,h:50052 --save-counts counts.json --world-size 2 ... -o p.json
//
// With --servers the counts are the sum of every rank's GetLoad.expert_load (each rank counts
// the tokens of its own requests), checked like a counts file: a server is a peer whose numbers
// are not trusted.
#include <fmt/format.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "cli/grpc_client_util.h"
#include "model/ep_placement.h"
#include "moe/v1/control.grpc.pb.h"

namespace moe::cli {
namespace {

struct EpPlanArgs {
    std::string counts;
    std::vector<std::string> servers;
    std::string save_counts;
    std::string admin_token;
    int world_size = 0;
    int redundant = 0;
    std::string output;
};

// Every server's GetModelInfo and GetLoad, summed into the counts-file form and parsed by the
// same checks as a file.
StatusOr<ExpertCounts> fetch_counts(const EpPlanArgs& a) {
    int64_t num_layers = -1, num_experts = -1;
    std::vector<std::vector<int64_t>> sum;  // [layer][expert], sized once the shape is known
    std::vector<bool> seen;
    constexpr int64_t kMaxCount = int64_t{1} << 53;  // parse_expert_counts' bound
    for (const std::string& addr : a.servers) {
        auto control = v1::Control::NewStub(make_channel(addr));
        v1::ModelInfo info;
        v1::Load load;
        for (int call = 0; call < 2; ++call) {
            grpc::ClientContext ctx;
            ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
            add_admin_token(ctx, a.admin_token);
            const grpc::Status s = call == 0 ? control->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info)
                                             : control->GetLoad(&ctx, v1::GetLoadRequest(), &load);
            if (!s.ok())
                return unavailable(
                    fmt::format("{} on {}: {}", call == 0 ? "GetModelInfo" : "GetLoad", addr, grpc_status_string(s)));
        }
        if (info.num_layers() < 1 || info.num_layers() > kMaxEpLayers || info.num_experts() < 1 ||
            info.num_experts() > kMaxEpExperts)
            return invalid_argument(fmt::format("{}: the model has {} layers and {} routed experts (limits {} and {})",
                                                addr, info.num_layers(), info.num_experts(), kMaxEpLayers,
                                                kMaxEpExperts));
        if (num_layers < 0) {
            num_layers = info.num_layers();
            num_experts = info.num_experts();
            sum.assign(static_cast<size_t>(num_layers), std::vector<int64_t>(static_cast<size_t>(num_experts), 0));
            seen.assign(static_cast<size_t>(num_layers), false);
        } else if (info.num_layers() != num_layers || info.num_experts() != num_experts) {
            return invalid_argument(fmt::format("{} serves {} layers x {} experts, {} served {} x {}: not one model",
                                                addr, info.num_layers(), info.num_experts(), a.servers[0], num_layers,
                                                num_experts));
        }
        if (load.expert_load().empty())
            return failed_precondition(
                fmt::format("{}: GetLoad has no expert counts (is it serving with "
                            "--expert-parallel?)",
                            addr));
        for (int i = 0; i < load.expert_load_size(); ++i) {
            const v1::ExpertLoad& l = load.expert_load(i);
            if (l.layer() < 0 || l.layer() >= num_layers || l.tokens_size() != num_experts)
                return invalid_argument(
                    fmt::format("{}: expert_load[{}] is layer {} with {} counts; the model has {} "
                                "layers of {} experts",
                                addr, i, l.layer(), l.tokens_size(), num_layers, num_experts));
            auto& row = sum[static_cast<size_t>(l.layer())];
            for (int e = 0; e < l.tokens_size(); ++e) {
                const int64_t t = l.tokens(e);
                if (t < 0 || t > kMaxCount - row[static_cast<size_t>(e)])
                    return invalid_argument(
                        fmt::format("{}: expert_load[{}].tokens[{}] = {} (summed {}) is not a "
                                    "token count in [0, 2^53]",
                                    addr, i, e, t, row[static_cast<size_t>(e)]));
                row[static_cast<size_t>(e)] += t;
            }
            seen[static_cast<size_t>(l.layer())] = true;
        }
    }
    nlohmann::json layers = nlohmann::json::array();
    for (size_t l = 0; l < sum.size(); ++l)
        if (seen[l]) layers.push_back({{"layer", l}, {"counts", sum[l]}});
    const nlohmann::json j{{"num_layers", num_layers}, {"num_experts", num_experts}, {"layers", std::move(layers)}};
    if (!a.save_counts.empty()) {
        std::ofstream out(a.save_counts, std::ios::binary | std::ios::trunc);
        out << j.dump() << "\n";
        out.close();
        if (!out) return data_loss(fmt::format("--save-counts: writing {} failed", a.save_counts));
    }
    return parse_expert_counts(j, "GetLoad of " + std::to_string(a.servers.size()) + " server(s)");
}

Status run(const EpPlanArgs& a) {
    if (a.world_size < 1 || a.world_size > kMaxEpWorldSize)
        return invalid_argument(fmt::format("--world-size {}: must be in [1, {}]", a.world_size, kMaxEpWorldSize));
    if (a.counts.empty() == a.servers.empty())
        return invalid_argument("give exactly one of --counts FILE and --servers ADDR,...");
    if (!a.save_counts.empty() && a.servers.empty()) return invalid_argument("--save-counts needs --servers");
    StatusOr<ExpertCounts> counts_or = a.servers.empty() ? load_expert_counts(a.counts) : fetch_counts(a);
    MOE_ASSIGN_OR_RETURN(ExpertCounts counts, std::move(counts_or));
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
                    "[{\"layer\", \"counts\"}]}");
    cmd->add_option("--servers", args->servers,
                    "instead of --counts: the ranks' gRPC addresses (host:port, comma-separated); their GetLoad "
                    "counts are summed")
        ->delimiter(',');
    cmd->add_option("--save-counts", args->save_counts, "with --servers: also write the summed counts JSON here");
    cmd->add_option("--admin-token", args->admin_token, "sent as 'authorization: Bearer <token>' (GetLoad is admin)")
        ->envname("MOESERVE_ADMIN_TOKEN");
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
