#include "model/ep_placement.h"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <numeric>

#include "core/json_limits.h"

namespace moe {
namespace {

constexpr const char* kPlacementFormat = "moeserve-ep-placement";

// An integer field of `j` within [lo, hi]; `where` names it in errors.
StatusOr<int64_t> get_int(const nlohmann::json& j, const char* key, int64_t lo, int64_t hi, const std::string& where) {
    auto it = j.find(key);
    if (it == j.end()) return invalid_argument(fmt::format("{}: missing \"{}\"", where, key));
    if (!it->is_number_integer())
        return invalid_argument(fmt::format("{}: \"{}\" must be an integer, got {}", where, key, it->type_name()));
    // Unsigned values above INT64_MAX are out of range either way.
    if (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
        return invalid_argument(fmt::format("{}: \"{}\" is out of range [{}, {}]", where, key, lo, hi));
    const int64_t v = it->get<int64_t>();
    if (v < lo || v > hi)
        return invalid_argument(fmt::format("{}: \"{}\" = {} is out of range [{}, {}]", where, key, v, lo, hi));
    return v;
}

Status check_dims(int num_experts, int world_size) {
    if (num_experts < 1 || num_experts > kMaxEpExperts)
        return invalid_argument(
            fmt::format("expert placement: {} experts, must be in [1, {}]", num_experts, kMaxEpExperts));
    if (world_size < 1 || world_size > kMaxEpWorldSize)
        return invalid_argument(
            fmt::format("expert placement: world size {}, must be in [1, {}]", world_size, kMaxEpWorldSize));
    return ok_status();
}

}  // namespace

// ---- LayerPlacement -------------------------------------------------------------------------

StatusOr<LayerPlacement> LayerPlacement::contiguous(int num_experts, int world_size) {
    MOE_RETURN_IF_ERROR(check_dims(num_experts, world_size));
    std::vector<std::vector<int32_t>> slots(static_cast<size_t>(world_size));
    const int q = num_experts / world_size, m = num_experts % world_size;
    int32_t next = 0;
    for (int r = 0; r < world_size; ++r) {
        const int n = q + (r < m ? 1 : 0);
        for (int k = 0; k < n; ++k) slots[static_cast<size_t>(r)].push_back(next++);
    }
    return from_rank_slots(num_experts, slots, "contiguous");
}

StatusOr<LayerPlacement> LayerPlacement::from_rank_slots(int num_experts,
                                                         const std::vector<std::vector<int32_t>>& rank_slots,
                                                         const std::string& where) {
    MOE_RETURN_IF_ERROR(check_dims(num_experts, static_cast<int>(std::min<size_t>(rank_slots.size(), INT32_MAX))));
    LayerPlacement p;
    p.num_experts_ = num_experts;
    // A rank holds each expert at most once, so the total is at most E * N: bounded by the limits.
    size_t total = 0;
    for (const auto& s : rank_slots) total += s.size();
    const size_t max_total = static_cast<size_t>(num_experts) * rank_slots.size();
    if (total > max_total)
        return invalid_argument(
            fmt::format("{}: {} physical slots for {} experts on {} ranks; a rank holds an expert "
                        "at most once, so at most {}",
                        where, total, num_experts, rank_slots.size(), max_total));
    p.rank_begin_.reserve(rank_slots.size() + 1);
    p.physical_to_logical_.reserve(total);
    std::vector<int32_t> replica_count(static_cast<size_t>(num_experts), 0);
    std::vector<int32_t> seen_on(static_cast<size_t>(num_experts), -1);  // last rank that held it
    for (size_t r = 0; r < rank_slots.size(); ++r) {
        p.rank_begin_.push_back(static_cast<int32_t>(p.physical_to_logical_.size()));
        for (size_t k = 0; k < rank_slots[r].size(); ++k) {
            const int32_t e = rank_slots[r][k];
            if (e < 0 || e >= num_experts)
                return invalid_argument(
                    fmt::format("{}: ranks[{}][{}] = {} is not an expert id in [0, {})", where, r, k, e, num_experts));
            if (seen_on[static_cast<size_t>(e)] == static_cast<int32_t>(r))
                return invalid_argument(
                    fmt::format("{}: rank {} holds expert {} twice (ranks[{}][{}])", where, r, e, r, k));
            seen_on[static_cast<size_t>(e)] = static_cast<int32_t>(r);
            ++replica_count[static_cast<size_t>(e)];
            p.physical_to_logical_.push_back(e);
        }
    }
    p.rank_begin_.push_back(static_cast<int32_t>(p.physical_to_logical_.size()));
    for (int e = 0; e < num_experts; ++e) {
        if (replica_count[static_cast<size_t>(e)] == 0)
            return invalid_argument(fmt::format(
                "{}: expert {} is held by no rank (every expert of [0, {}) needs a slot)", where, e, num_experts));
    }
    p.replica_begin_.assign(static_cast<size_t>(num_experts) + 1, 0);
    for (int e = 0; e < num_experts; ++e)
        p.replica_begin_[static_cast<size_t>(e) + 1] =
            p.replica_begin_[static_cast<size_t>(e)] + replica_count[static_cast<size_t>(e)];
    p.replicas_.assign(total, 0);
    std::vector<int32_t> fill(p.replica_begin_.begin(), p.replica_begin_.end() - 1);
    for (size_t s = 0; s < total; ++s)  // ascending physical ids per expert
        p.replicas_[static_cast<size_t>(fill[static_cast<size_t>(p.physical_to_logical_[s])]++)] =
            static_cast<int32_t>(s);
    return p;
}

int LayerPlacement::rank_of_physical(int32_t physical) const {
    // rank_begin_ is non-decreasing; the owner is the last rank whose range starts at or before
    // `physical` and is not empty.
    auto it = std::upper_bound(rank_begin_.begin(), rank_begin_.end(), physical);
    return static_cast<int>(it - rank_begin_.begin()) - 1;
}

std::span<const int32_t> LayerPlacement::replicas(int32_t logical) const {
    const auto b = static_cast<size_t>(replica_begin_[static_cast<size_t>(logical)]);
    const auto e = static_cast<size_t>(replica_begin_[static_cast<size_t>(logical) + 1]);
    return {replicas_.data() + b, e - b};
}

std::span<const int32_t> LayerPlacement::local_experts(int rank) const {
    const auto b = static_cast<size_t>(physical_begin(rank));
    const auto e = static_cast<size_t>(physical_end(rank));
    return {physical_to_logical_.data() + b, e - b};
}

int32_t LayerPlacement::choose_replica(int32_t logical, int64_t token_row, int source_rank) const {
    const auto r = replicas(logical);
    if (r.size() == 1) return r[0];
    for (int32_t p : r)
        if (rank_of_physical(p) == source_rank) return p;
    const auto n = static_cast<int64_t>(r.size());
    return r[static_cast<size_t>(((token_row % n) + n) % n)];
}

std::vector<std::vector<int32_t>> LayerPlacement::rank_lists() const {
    std::vector<std::vector<int32_t>> out(static_cast<size_t>(world_size()));
    for (int r = 0; r < world_size(); ++r) {
        auto l = local_experts(r);
        out[static_cast<size_t>(r)].assign(l.begin(), l.end());
    }
    return out;
}

bool LayerPlacement::is_contiguous() const {
    if (num_physical() != num_experts_) return false;
    auto c = contiguous(num_experts_, world_size());
    return c.ok() && c->physical_to_logical_ == physical_to_logical_ && c->rank_begin_ == rank_begin_;
}

nlohmann::json LayerPlacement::to_json() const {
    nlohmann::json ranks = nlohmann::json::array();
    for (int r = 0; r < world_size(); ++r) {
        auto l = local_experts(r);
        ranks.push_back(std::vector<int32_t>(l.begin(), l.end()));
    }
    return nlohmann::json{{"ranks", std::move(ranks)}};
}

// ---- EpPlacement ----------------------------------------------------------------------------

StatusOr<EpPlacement> EpPlacement::contiguous(int num_layers, int num_experts, int world_size) {
    if (num_layers < 1 || num_layers > kMaxEpLayers)
        return invalid_argument(
            fmt::format("expert placement: {} layers, must be in [1, {}]", num_layers, kMaxEpLayers));
    MOE_ASSIGN_OR_RETURN(LayerPlacement one, LayerPlacement::contiguous(num_experts, world_size));
    EpPlacement p;
    p.world_size_ = world_size;
    p.num_experts_ = num_experts;
    p.layers_.assign(static_cast<size_t>(num_layers), one);
    return p;
}

Status EpPlacement::set_layer(int layer, LayerPlacement placement) {
    if (layer < 0 || layer >= num_layers())
        return invalid_argument(fmt::format("expert placement: layer {} is not in [0, {})", layer, num_layers()));
    if (placement.num_experts() != num_experts_ || placement.world_size() != world_size_)
        return invalid_argument(
            fmt::format("expert placement: layer {} has {} experts on {} ranks, the placement {} experts on {} ranks",
                        layer, placement.num_experts(), placement.world_size(), num_experts_, world_size_));
    layers_[static_cast<size_t>(layer)] = std::move(placement);
    return ok_status();
}

StatusOr<EpPlacement> EpPlacement::from_json(const nlohmann::json& j, int num_layers, int num_experts, int world_size,
                                             const std::string& origin) {
    if (!j.is_object()) return invalid_argument(fmt::format("{}: the placement must be a JSON object", origin));
    if (auto f = j.find("format"); f == j.end() || !f->is_string() || f->get<std::string>() != kPlacementFormat)
        return invalid_argument(fmt::format("{}: \"format\" must be \"{}\"", origin, kPlacementFormat));
    MOE_ASSIGN_OR_RETURN(int64_t version, get_int(j, "version", 1, 1, origin));
    (void)version;
    MOE_ASSIGN_OR_RETURN(int64_t ws, get_int(j, "world_size", 1, kMaxEpWorldSize, origin));
    MOE_ASSIGN_OR_RETURN(int64_t nl, get_int(j, "num_layers", 1, kMaxEpLayers, origin));
    MOE_ASSIGN_OR_RETURN(int64_t ne, get_int(j, "num_experts", 1, kMaxEpExperts, origin));
    if (ws != world_size)
        return invalid_argument(
            fmt::format("{}: \"world_size\" is {} but {} ranks were launched", origin, ws, world_size));
    if (nl != num_layers)
        return invalid_argument(fmt::format("{}: \"num_layers\" is {} but the model has {}", origin, nl, num_layers));
    if (ne != num_experts)
        return invalid_argument(
            fmt::format("{}: \"num_experts\" is {} but the model has {} routed experts", origin, ne, num_experts));
    MOE_ASSIGN_OR_RETURN(EpPlacement p, contiguous(num_layers, num_experts, world_size));
    auto layers = j.find("layers");
    if (layers == j.end() || !layers->is_array())
        return invalid_argument(fmt::format("{}: \"layers\" must be an array", origin));
    if (layers->size() > static_cast<size_t>(num_layers))
        return invalid_argument(
            fmt::format("{}: \"layers\" has {} entries, the model {} layers", origin, layers->size(), num_layers));
    std::vector<bool> given(static_cast<size_t>(num_layers), false);
    for (size_t i = 0; i < layers->size(); ++i) {
        const auto& l = (*layers)[i];
        const std::string where = fmt::format("{}: layers[{}]", origin, i);
        if (!l.is_object()) return invalid_argument(where + ": must be an object");
        MOE_ASSIGN_OR_RETURN(int64_t idx, get_int(l, "layer", 0, num_layers - 1, where));
        if (given[static_cast<size_t>(idx)])
            return invalid_argument(fmt::format("{}: layer {} is given twice", where, idx));
        given[static_cast<size_t>(idx)] = true;
        auto ranks = l.find("ranks");
        if (ranks == l.end() || !ranks->is_array())
            return invalid_argument(where + ": \"ranks\" must be an array (one list of expert ids per rank)");
        if (ranks->size() != static_cast<size_t>(world_size))
            return invalid_argument(
                fmt::format("{}: \"ranks\" has {} entries, the world size is {}", where, ranks->size(), world_size));
        std::vector<std::vector<int32_t>> slots(static_cast<size_t>(world_size));
        for (size_t r = 0; r < ranks->size(); ++r) {
            const auto& s = (*ranks)[r];
            if (!s.is_array())
                return invalid_argument(fmt::format("{}: ranks[{}] must be an array of expert ids", where, r));
            // A rank holds each expert at most once: more entries than experts is refused before
            // anything is copied.
            if (s.size() > static_cast<size_t>(num_experts))
                return invalid_argument(fmt::format("{}: ranks[{}] has {} slots, more than the {} experts", where, r,
                                                    s.size(), num_experts));
            for (size_t k = 0; k < s.size(); ++k) {
                const auto& v = s[k];
                if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > INT32_MAX) ||
                    v.get<int64_t>() < 0 || v.get<int64_t>() >= num_experts)
                    return invalid_argument(fmt::format("{}: ranks[{}][{}] = {} is not an expert id in [0, {})", where,
                                                        r, k, v.dump(), num_experts));
                slots[r].push_back(static_cast<int32_t>(v.get<int64_t>()));
            }
        }
        MOE_ASSIGN_OR_RETURN(LayerPlacement lp, LayerPlacement::from_rank_slots(num_experts, slots, where));
        MOE_RETURN_IF_ERROR(p.set_layer(static_cast<int>(idx), std::move(lp)));
    }
    return p;
}

StatusOr<EpPlacement> EpPlacement::load(const std::filesystem::path& path, int num_layers, int num_experts,
                                        int world_size) {
    MOE_ASSIGN_OR_RETURN(nlohmann::json j, read_json_file(path, kMaxEpPlacementFileBytes));
    return from_json(j, num_layers, num_experts, world_size, path.string());
}

nlohmann::json EpPlacement::to_json() const {
    nlohmann::json layers = nlohmann::json::array();
    for (int l = 0; l < num_layers(); ++l) {
        if (layer(l).is_contiguous()) continue;
        nlohmann::json e = layer(l).to_json();
        e["layer"] = l;
        layers.push_back(std::move(e));
    }
    return nlohmann::json{{"format", kPlacementFormat},  {"version", 1},
                          {"world_size", world_size_},   {"num_layers", num_layers()},
                          {"num_experts", num_experts_}, {"layers", std::move(layers)}};
}

// ---- counts and the planner -----------------------------------------------------------------

StatusOr<ExpertCounts> parse_expert_counts(const nlohmann::json& j, const std::string& origin) {
    if (!j.is_object()) return invalid_argument(fmt::format("{}: the counts must be a JSON object", origin));
    ExpertCounts c;
    MOE_ASSIGN_OR_RETURN(int64_t nl, get_int(j, "num_layers", 1, kMaxEpLayers, origin));
    MOE_ASSIGN_OR_RETURN(int64_t ne, get_int(j, "num_experts", 1, kMaxEpExperts, origin));
    c.num_layers = static_cast<int>(nl);
    c.num_experts = static_cast<int>(ne);
    auto layers = j.find("layers");
    if (layers == j.end() || !layers->is_array())
        return invalid_argument(fmt::format("{}: \"layers\" must be an array", origin));
    if (layers->size() > static_cast<size_t>(nl))
        return invalid_argument(
            fmt::format("{}: \"layers\" has {} entries, more than num_layers = {}", origin, layers->size(), nl));
    std::vector<bool> given(static_cast<size_t>(nl), false);
    for (size_t i = 0; i < layers->size(); ++i) {
        const auto& l = (*layers)[i];
        const std::string where = fmt::format("{}: layers[{}]", origin, i);
        if (!l.is_object()) return invalid_argument(where + ": must be an object");
        MOE_ASSIGN_OR_RETURN(int64_t idx, get_int(l, "layer", 0, nl - 1, where));
        if (given[static_cast<size_t>(idx)])
            return invalid_argument(fmt::format("{}: layer {} is given twice", where, idx));
        given[static_cast<size_t>(idx)] = true;
        auto counts = l.find("counts");
        if (counts == l.end() || !counts->is_array())
            return invalid_argument(where + ": \"counts\" must be an array of per-expert token counts");
        if (counts->size() != static_cast<size_t>(ne))
            return invalid_argument(
                fmt::format("{}: \"counts\" has {} entries, num_experts is {}", where, counts->size(), ne));
        std::vector<int64_t> v(static_cast<size_t>(ne));
        for (size_t e = 0; e < counts->size(); ++e) {
            const auto& x = (*counts)[e];
            // Counts are summed over experts and ranks: 2^53 keeps every sum far from overflow.
            constexpr int64_t kMaxCount = int64_t{1} << 53;
            if (!x.is_number_integer() ||
                (x.is_number_unsigned() && x.get<uint64_t>() > static_cast<uint64_t>(kMaxCount)) ||
                x.get<int64_t>() < 0 || x.get<int64_t>() > kMaxCount)
                return invalid_argument(
                    fmt::format("{}: counts[{}] = {} is not a token count in [0, 2^53]", where, e, x.dump()));
            v[e] = x.get<int64_t>();
        }
        c.layer_ids.push_back(static_cast<int>(idx));
        c.counts.push_back(std::move(v));
    }
    return c;
}

StatusOr<ExpertCounts> load_expert_counts(const std::filesystem::path& path) {
    MOE_ASSIGN_OR_RETURN(nlohmann::json j, read_json_file(path, kMaxEpPlacementFileBytes));
    return parse_expert_counts(j, path.string());
}

nlohmann::json expert_counts_to_json(const ExpertCounts& counts) {
    nlohmann::json layers = nlohmann::json::array();
    for (size_t i = 0; i < counts.layer_ids.size(); ++i)
        layers.push_back({{"layer", counts.layer_ids[i]}, {"counts", counts.counts[i]}});
    return nlohmann::json{
        {"num_layers", counts.num_layers}, {"num_experts", counts.num_experts}, {"layers", std::move(layers)}};
}

static StatusOr<LayerPlacement> plan_layer_impl(std::span<const int64_t> counts, int world_size, int redundant,
                                                bool lpt) {
    const int num_experts = static_cast<int>(std::min<size_t>(counts.size(), INT32_MAX));
    MOE_RETURN_IF_ERROR(check_dims(num_experts, world_size));
    const int64_t max_redundant = static_cast<int64_t>(num_experts) * (world_size - 1);
    if (redundant < 0 || redundant > max_redundant)
        return invalid_argument(
            fmt::format("--redundant {}: must be in [0, {}] ({} experts, {} ranks: at most one "
                        "replica of an expert per rank)",
                        redundant, max_redundant, num_experts, world_size));
    for (size_t e = 0; e < counts.size(); ++e)
        if (counts[e] < 0)
            return invalid_argument(fmt::format("expert counts: counts[{}] = {} is negative", e, counts[e]));

    // 1. Replica counts: each redundant slot to the expert whose per-replica load is highest
    //    (compared exactly: a/b > c/d as a*d > c*b in 128 bits).
    std::vector<int> nrep(static_cast<size_t>(num_experts), 1);
    auto heavier = [&](int a, int b) {  // per-replica load of a > b
        const __int128 l = static_cast<__int128>(counts[static_cast<size_t>(a)]) * nrep[static_cast<size_t>(b)];
        const __int128 r = static_cast<__int128>(counts[static_cast<size_t>(b)]) * nrep[static_cast<size_t>(a)];
        return l != r ? l > r : a < b;
    };
    for (int k = 0; k < redundant; ++k) {
        int best = -1;
        for (int e = 0; e < num_experts; ++e) {
            if (nrep[static_cast<size_t>(e)] >= world_size) continue;
            if (best < 0 || heavier(e, best)) best = e;
        }
        ++nrep[static_cast<size_t>(best)];  // one exists: redundant <= E * (N - 1)
    }

    // 2. Slots per rank: E + R over N, the first (E+R) % N ranks one more.
    const int64_t total = static_cast<int64_t>(num_experts) + redundant;
    std::vector<int64_t> cap(static_cast<size_t>(world_size), total / world_size);
    for (int r = 0; r < total % world_size; ++r) ++cap[static_cast<size_t>(r)];

    // 3. Replicas heaviest first (longest processing time first) onto the least loaded rank with
    //    a free slot that does not hold the expert yet. Loads are per-replica shares, in doubles
    //    (only their order matters).
    struct Item {
        int expert;
        double load;
    };
    std::vector<Item> items;
    items.reserve(static_cast<size_t>(total));
    for (int e = 0; e < num_experts; ++e)
        for (int k = 0; k < nrep[static_cast<size_t>(e)]; ++k)
            items.push_back({e, static_cast<double>(counts[static_cast<size_t>(e)]) / nrep[static_cast<size_t>(e)]});
    // std::sort with total orders throughout (ties broken by id): deterministic without
    // stable_sort, whose temporary buffer comes from operator new(nothrow), which a test binary
    // that replaces operator new/delete (tests/model/forward_alloc_test.cc) mismatches under ASan.
    std::sort(items.begin(), items.end(),
              [](const Item& a, const Item& b) { return a.load != b.load ? a.load > b.load : a.expert < b.expert; });
    auto try_lpt = [&](std::vector<std::vector<int32_t>>& slots) {
        std::vector<double> load(static_cast<size_t>(world_size), 0.0);
        for (const Item& it : items) {
            int best = -1;
            for (int r = 0; r < world_size; ++r) {
                const auto& s = slots[static_cast<size_t>(r)];
                if (static_cast<int64_t>(s.size()) >= cap[static_cast<size_t>(r)]) continue;
                if (std::find(s.begin(), s.end(), it.expert) != s.end()) continue;
                if (best < 0 || load[static_cast<size_t>(r)] < load[static_cast<size_t>(best)]) best = r;
            }
            if (best < 0) return false;
            slots[static_cast<size_t>(best)].push_back(it.expert);
            load[static_cast<size_t>(best)] += it.load;
        }
        return true;
    };
    std::vector<std::vector<int32_t>> slots(static_cast<size_t>(world_size));
    if (!lpt || !try_lpt(slots)) {
        // LPT can paint itself into a corner (the only free slots are on ranks that already hold
        // the expert). Ryser's construction cannot: experts with the most replicas first, each
        // onto the ranks with the most free slots (ties: least loaded).
        slots.assign(static_cast<size_t>(world_size), {});
        std::vector<double> load(static_cast<size_t>(world_size), 0.0);
        std::vector<int> order(static_cast<size_t>(num_experts));
        std::iota(order.begin(), order.end(), 0);
        std::sort(order.begin(), order.end(), [&](int a, int b) {
            const int na = nrep[static_cast<size_t>(a)], nb = nrep[static_cast<size_t>(b)];
            return na != nb ? na > nb : a < b;
        });
        std::vector<int> ranks(static_cast<size_t>(world_size));
        for (int e : order) {
            std::iota(ranks.begin(), ranks.end(), 0);
            std::sort(ranks.begin(), ranks.end(), [&](int a, int b) {
                const int64_t fa =
                    cap[static_cast<size_t>(a)] - static_cast<int64_t>(slots[static_cast<size_t>(a)].size());
                const int64_t fb =
                    cap[static_cast<size_t>(b)] - static_cast<int64_t>(slots[static_cast<size_t>(b)].size());
                if (fa != fb) return fa > fb;
                const double la = load[static_cast<size_t>(a)], lb = load[static_cast<size_t>(b)];
                return la != lb ? la < lb : a < b;
            });
            const double share = static_cast<double>(counts[static_cast<size_t>(e)]) / nrep[static_cast<size_t>(e)];
            for (int k = 0; k < nrep[static_cast<size_t>(e)]; ++k) {
                const int r = ranks[static_cast<size_t>(k)];
                if (static_cast<int64_t>(slots[static_cast<size_t>(r)].size()) >= cap[static_cast<size_t>(r)])
                    return internal_error(fmt::format("expert planner: no free slot for expert {} ({} replicas)", e,
                                                      nrep[static_cast<size_t>(e)]));
                slots[static_cast<size_t>(r)].push_back(e);
                load[static_cast<size_t>(r)] += share;
            }
        }
    }
    // Slot order: ascending logical id, so a rank's weights pack in the model's order.
    for (auto& s : slots) std::sort(s.begin(), s.end());
    return LayerPlacement::from_rank_slots(num_experts, slots, "expert planner");
}

StatusOr<LayerPlacement> plan_layer(std::span<const int64_t> counts, int world_size, int redundant) {
    return plan_layer_impl(counts, world_size, redundant, /*lpt=*/true);
}

namespace ep_detail {
StatusOr<LayerPlacement> plan_layer_ryser(std::span<const int64_t> counts, int world_size, int redundant) {
    return plan_layer_impl(counts, world_size, redundant, /*lpt=*/false);
}
}  // namespace ep_detail

StatusOr<EpPlacement> plan_placement(const ExpertCounts& counts, int world_size, int redundant) {
    // Checked here too, so that a counts file without layers still refuses a bad request.
    MOE_RETURN_IF_ERROR(check_dims(counts.num_experts, world_size));
    const int64_t max_redundant = static_cast<int64_t>(counts.num_experts) * (world_size - 1);
    if (redundant < 0 || redundant > max_redundant)
        return invalid_argument(
            fmt::format("--redundant {}: must be in [0, {}] ({} experts, {} ranks: at most one "
                        "replica of an expert per rank)",
                        redundant, max_redundant, counts.num_experts, world_size));
    MOE_ASSIGN_OR_RETURN(EpPlacement p, EpPlacement::contiguous(counts.num_layers, counts.num_experts, world_size));
    for (size_t i = 0; i < counts.layer_ids.size(); ++i) {
        MOE_ASSIGN_OR_RETURN(LayerPlacement lp, plan_layer(counts.counts[i], world_size, redundant));
        MOE_RETURN_IF_ERROR(p.set_layer(counts.layer_ids[i], std::move(lp)));
    }
    return p;
}

double placement_imbalance(const LayerPlacement& placement, std::span<const int64_t> counts) {
    std::vector<double> load(static_cast<size_t>(placement.world_size()), 0.0);
    double sum = 0;
    for (int e = 0; e < placement.num_experts() && static_cast<size_t>(e) < counts.size(); ++e) {
        const auto reps = placement.replicas(e);
        const double share = static_cast<double>(counts[static_cast<size_t>(e)]) / static_cast<double>(reps.size());
        for (int32_t p : reps) load[static_cast<size_t>(placement.rank_of_physical(p))] += share;
        sum += static_cast<double>(counts[static_cast<size_t>(e)]);
    }
    if (sum <= 0) return 1.0;
    const double mean = sum / placement.world_size();
    return *std::max_element(load.begin(), load.end()) / mean;
}

}  // namespace moe
