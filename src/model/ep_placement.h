// Expert placement for expert parallelism (EP): which rank holds which experts, per MoE layer.
//
// Every rank runs attention on its own requests and holds a share of the routed experts. The
// experts a rank holds are its *physical slots*; each slot runs one *logical* expert (the
// router's expert id). With no placement file the layout is contiguous: rank r holds logical
// experts [begin_r, end_r), the first E % N ranks one more than the rest (E experts, N ranks;
// a rank may hold none when E < N). A placement file (EPLB) may give a hot expert redundant
// replicas on several ranks, so its tokens spread over them.
//
// Physical slots are numbered globally, rank 0's slots first, then rank 1's, ...; within a
// rank in the order the file lists them ("slot order"), which is the order the rank packs its
// expert weights and runs its grouped experts.
//
// Results never depend on the placement: every replica of an expert holds the same weights and
// runs the same kernel on one row at a time, and the combine puts each row back in its
// (token, top-k slot) position before the weighted sum. Replica choice only moves where a row
// is computed.
//
// Thread safety: immutable after construction; const methods may be called from any thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json_fwd.hpp>
#include <span>
#include <string>
#include <vector>

#include "moe/status.h"

namespace moe {

// Limits on what a placement or counts file may claim (checked before anything is allocated
// from its numbers).
inline constexpr int kMaxEpWorldSize = 4096;
inline constexpr int kMaxEpLayers = 4096;
inline constexpr int kMaxEpExperts = 65536;           // logical experts per layer
inline constexpr int kMaxEpReplicasPerExpert = 4096;  // never more than the world size either
inline constexpr size_t kMaxEpPlacementFileBytes = size_t{64} << 20;

// The placement of one MoE layer.
class LayerPlacement {
public:
    // Contiguous ranges: rank r holds logical experts [r*q + min(r, m), ...) with q = E / N,
    // m = E % N (the first m ranks one more). No replicas.
    static StatusOr<LayerPlacement> contiguous(int num_experts, int world_size);
    // From the logical ids each rank holds, in slot order (rank_slots.size() == world size).
    // Checked: every id in [0, num_experts), every expert held by at least one rank, no rank
    // holding the same expert twice. `where` prefixes error messages (e.g. "layers[3]").
    static StatusOr<LayerPlacement> from_rank_slots(int num_experts,
                                                    const std::vector<std::vector<int32_t>>& rank_slots,
                                                    const std::string& where);

    int num_experts() const { return num_experts_; }  // logical
    int world_size() const { return static_cast<int>(rank_begin_.size()) - 1; }
    int num_physical() const { return static_cast<int>(physical_to_logical_.size()); }

    // The rank holding physical slot `physical` (0 <= physical < num_physical()).
    int rank_of_physical(int32_t physical) const;
    // Physical slots of `rank`: [physical_begin(rank), physical_end(rank)).
    int32_t physical_begin(int rank) const { return rank_begin_[static_cast<size_t>(rank)]; }
    int32_t physical_end(int rank) const { return rank_begin_[static_cast<size_t>(rank) + 1]; }
    int32_t logical_of_physical(int32_t physical) const { return physical_to_logical_[static_cast<size_t>(physical)]; }
    // Physical replicas of logical expert `logical`, ascending (at least one).
    std::span<const int32_t> replicas(int32_t logical) const;
    // Logical ids `rank` holds, in slot order (may be empty).
    std::span<const int32_t> local_experts(int rank) const;
    // The replica a row goes to, deterministic in (logical, token_row, source_rank): a copy on
    // `source_rank` itself when there is one (no traffic), else the copies in turn by token row
    // (replicas[token_row % count]). The same rule as ExpertPlacement::physical_for in the EP
    // model code, so a plan's balance is judged by the rule the model applies.
    int32_t choose_replica(int32_t logical, int64_t token_row, int source_rank) const;
    // The logical ids of every rank, in slot order: the form ExpertPlacement::from_rank_lists
    // (model/expert_parallel.h) takes.
    std::vector<std::vector<int32_t>> rank_lists() const;
    // True when this is exactly the contiguous layout (no replicas, ranges in order).
    bool is_contiguous() const;

    // {"ranks": [[logical ids of rank 0], [rank 1], ...]}
    nlohmann::json to_json() const;

private:
    int num_experts_ = 0;
    std::vector<int32_t> physical_to_logical_;  // global slot -> logical id
    std::vector<int32_t> rank_begin_;           // world_size + 1 entries
    std::vector<int32_t> replica_begin_;        // num_experts + 1 entries (CSR into replicas_)
    std::vector<int32_t> replicas_;             // physical ids, grouped by logical, ascending
};

// The placement of every layer of a model. Layers the file does not name are contiguous.
class EpPlacement {
public:
    // Contiguous on every layer.
    static StatusOr<EpPlacement> contiguous(int num_layers, int num_experts, int world_size);

    // Parses a placement file's JSON. Format:
    //   {"format": "moeserve-ep-placement", "version": 1, "world_size": N, "num_layers": L,
    //    "num_experts": E, "layers": [{"layer": i, "ranks": [[...], ...]}, ...]}
    // `layer` is the transformer layer index (0 <= i < L; each at most once); layers not listed
    // keep the contiguous layout. Every number is checked against the limits above, and the
    // file's world_size / num_layers / num_experts against the caller's (the model's config and
    // the launched world): a mismatch is kInvalidArgument naming the field and both values.
    static StatusOr<EpPlacement> from_json(const nlohmann::json& j, int num_layers, int num_experts, int world_size,
                                           const std::string& origin);
    // read_json_file (bounded size and depth) + from_json.
    static StatusOr<EpPlacement> load(const std::filesystem::path& path, int num_layers, int num_experts,
                                      int world_size);

    int world_size() const { return world_size_; }
    int num_layers() const { return static_cast<int>(layers_.size()); }
    int num_experts() const { return num_experts_; }
    // The placement of transformer layer `layer` (0 <= layer < num_layers()).
    const LayerPlacement& layer(int layer) const { return layers_[static_cast<size_t>(layer)]; }
    // Sets one layer (the planner's output). Its expert count and world size must match.
    Status set_layer(int layer, LayerPlacement placement);

    // The file format above; layers that are contiguous are left out.
    nlohmann::json to_json() const;

private:
    int world_size_ = 0;
    int num_experts_ = 0;
    std::vector<LayerPlacement> layers_;
};

// ---- the planner (EPLB) ----------------------------------------------------------------------

// Recorded per-layer per-expert token counts, the planner's input. Format:
//   {"num_layers": L, "num_experts": E, "layers": [{"layer": i, "counts": [c_0, ..., c_{E-1}]}]}
// (counts non-negative integers; layers not listed are planned contiguous).
struct ExpertCounts {
    int num_layers = 0;
    int num_experts = 0;
    std::vector<int> layer_ids;                // transformer layer index of each entry
    std::vector<std::vector<int64_t>> counts;  // [entry][expert]
};
StatusOr<ExpertCounts> parse_expert_counts(const nlohmann::json& j, const std::string& origin);
StatusOr<ExpertCounts> load_expert_counts(const std::filesystem::path& path);
nlohmann::json expert_counts_to_json(const ExpertCounts& counts);

// One layer: E + redundant physical slots over `world_size` ranks (the first (E+R) % N ranks one
// slot more). Redundant slots go one at a time to the expert with the highest load per replica
// (never more replicas than ranks); replicas are then placed heaviest first on the least loaded
// rank that has a free slot and does not hold that expert yet. Deterministic (ties by lower id).
StatusOr<LayerPlacement> plan_layer(std::span<const int64_t> counts, int world_size, int redundant);
namespace ep_detail {
// plan_layer's fallback alone (experts with the most replicas first, each onto the ranks with the
// most free slots), which plan_layer uses when its greedy pass finds no rank for a replica.
// Exposed for tests: random loads rarely reach it through plan_layer.
StatusOr<LayerPlacement> plan_layer_ryser(std::span<const int64_t> counts, int world_size, int redundant);
}  // namespace ep_detail

// Every layer of `counts`, the others contiguous.
StatusOr<EpPlacement> plan_placement(const ExpertCounts& counts, int world_size, int redundant);

// The heaviest rank's load over the mean (1.0 = perfect), when each expert's count is split
// evenly over its replicas. For reports and tests.
double placement_imbalance(const LayerPlacement& placement, std::span<const int64_t> counts);

}  // namespace moe
