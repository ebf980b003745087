// Expert placement (EPLB): the contiguous default, placement files (valid and hostile), the
// replica choice, the counts file and the planner.
#include "model/ep_placement.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

namespace moe {
namespace {

using nlohmann::json;
using Lists = std::vector<std::vector<int32_t>>;

std::vector<int32_t> span_vec(std::span<const int32_t> s) {
    return {s.begin(), s.end()};
}

TEST(EpPlacement, ContiguousFirstRanksTakeTheRemainder) {
    auto p = LayerPlacement::contiguous(8, 3);
    ASSERT_TRUE(p.ok()) << p.status().to_string();
    EXPECT_EQ(p->rank_lists(), (Lists{{0, 1, 2}, {3, 4, 5}, {6, 7}}));
    EXPECT_EQ(p->num_physical(), 8);
    EXPECT_TRUE(p->is_contiguous());
    for (int32_t s = 0; s < 8; ++s) {
        EXPECT_EQ(p->rank_of_physical(s), s < 3 ? 0 : s < 6 ? 1 : 2) << s;
        EXPECT_EQ(p->logical_of_physical(s), s);
        EXPECT_EQ(span_vec(p->replicas(s)), std::vector<int32_t>{s});
        EXPECT_EQ(p->choose_replica(s, 12345, 1), s);
    }
    EXPECT_EQ(p->physical_begin(2), 6);
    EXPECT_EQ(p->physical_end(2), 8);
}

TEST(EpPlacement, FewerExpertsThanRanksLeavesRanksEmpty) {
    auto p = LayerPlacement::contiguous(2, 3);
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(p->rank_lists(), (Lists{{0}, {1}, {}}));
    EXPECT_TRUE(p->local_experts(2).empty());
    EXPECT_EQ(p->rank_of_physical(1), 1);
}

TEST(EpPlacement, RedundantReplicasAndTheirChoice) {
    // Expert 1 is on ranks 0 and 2, expert 0 on ranks 1 and 2.
    auto p = LayerPlacement::from_rank_slots(3, {{1, 2}, {0}, {0, 1}}, "t");
    ASSERT_TRUE(p.ok()) << p.status().to_string();
    EXPECT_FALSE(p->is_contiguous());
    EXPECT_EQ(p->num_physical(), 5);
    EXPECT_EQ(span_vec(p->replicas(0)), (std::vector<int32_t>{2, 3}));
    EXPECT_EQ(span_vec(p->replicas(1)), (std::vector<int32_t>{0, 4}));
    EXPECT_EQ(span_vec(p->local_experts(2)), (std::vector<int32_t>{0, 1}));
    EXPECT_EQ(p->rank_of_physical(3), 2);
    // A source that holds a copy uses it; others alternate by token row.
    EXPECT_EQ(p->choose_replica(0, 7, 1), 2);
    EXPECT_EQ(p->choose_replica(0, 7, 2), 3);
    EXPECT_EQ(p->choose_replica(0, 0, 0), 2);
    EXPECT_EQ(p->choose_replica(0, 1, 0), 3);
    EXPECT_EQ(p->choose_replica(0, 2, 0), 2);
    EXPECT_EQ(p->choose_replica(1, 3, 1), 4);
}

TEST(EpPlacement, RankSlotsRefusedWithTheField) {
    auto expect = [](const Lists& l, const std::string& what) {
        auto p = LayerPlacement::from_rank_slots(4, l, "layers[2]");
        ASSERT_FALSE(p.ok()) << what;
        EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
        EXPECT_NE(p.status().message().find(what), std::string::npos) << p.status().message();
        EXPECT_NE(p.status().message().find("layers[2]"), std::string::npos) << p.status().message();
    };
    expect({{0, 1}, {2, 4}}, "ranks[1][1] = 4 is not an expert id");
    expect({{0, -1}, {2, 3}}, "ranks[0][1] = -1");
    expect({{0, 1, 0}, {2, 3}}, "rank 0 holds expert 0 twice");
    expect({{0, 1}, {3}}, "expert 2 is held by no rank");
    auto none = LayerPlacement::from_rank_slots(4, {}, "x");
    EXPECT_FALSE(none.ok());
}

json placement_file(const Lists& layer1) {
    return json{{"format", "moeserve-ep-placement"},
                {"version", 1},
                {"world_size", 2},
                {"num_layers", 3},
                {"num_experts", 4},
                {"layers", json::array({{{"layer", 1}, {"ranks", layer1}}})}};
}

TEST(EpPlacement, FileRoundTrip) {
    auto p = EpPlacement::from_json(placement_file({{0, 1, 3}, {2, 3}}), 3, 4, 2, "p.json");
    ASSERT_TRUE(p.ok()) << p.status().to_string();
    EXPECT_TRUE(p->layer(0).is_contiguous());
    EXPECT_TRUE(p->layer(2).is_contiguous());
    EXPECT_EQ(p->layer(1).rank_lists(), (Lists{{0, 1, 3}, {2, 3}}));
    const json j = p->to_json();
    EXPECT_EQ(j["layers"].size(), 1u);  // contiguous layers are left out
    auto q = EpPlacement::from_json(j, 3, 4, 2, "again");
    ASSERT_TRUE(q.ok()) << q.status().to_string();
    for (int l = 0; l < 3; ++l) EXPECT_EQ(q->layer(l).rank_lists(), p->layer(l).rank_lists()) << l;
    EXPECT_EQ(q->to_json(), j);
    // Through a file too.
    const auto path = std::filesystem::temp_directory_path() / ("ep_placement_" + std::to_string(getpid()) + ".json");
    std::ofstream(path) << j.dump();
    auto r = EpPlacement::load(path, 3, 4, 2);
    std::filesystem::remove(path);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    EXPECT_EQ(r->layer(1).rank_lists(), p->layer(1).rank_lists());
}

TEST(EpPlacement, HostileFilesRefusedWithTheFieldAndLimit) {
    struct Case {
        std::function<void(json&)> edit;
        std::string what;
    };
    const std::vector<Case> cases = {
        {[](json& j) { j = json::array(); }, "must be a JSON object"},
        {[](json& j) { j["format"] = "other"; }, "\"format\" must be"},
        {[](json& j) { j["version"] = 2; }, "\"version\" = 2 is out of range [1, 1]"},
        {[](json& j) { j["world_size"] = 3; }, "\"world_size\" is 3 but 2 ranks were launched"},
        {[](json& j) { j["world_size"] = 1e9; }, "\"world_size\" must be an integer"},
        {[](json& j) { j["world_size"] = 99999999; }, "\"world_size\" = 99999999 is out of range [1, 4096]"},
        {[](json& j) { j["num_layers"] = 4; }, "\"num_layers\" is 4 but the model has 3"},
        {[](json& j) { j["num_experts"] = 5; }, "\"num_experts\" is 5 but the model has 4"},
        {[](json& j) { j["num_experts"] = "4"; }, "\"num_experts\" must be an integer"},
        {[](json& j) { j["num_experts"] = -4; }, "\"num_experts\" = -4 is out of range"},
        {[](json& j) { j["num_experts"] = 18446744073709551615ull; }, "\"num_experts\" is out of range"},
        {[](json& j) { j.erase("layers"); }, "\"layers\" must be an array"},
        {[](json& j) { j["layers"][0]["layer"] = 3; }, "layers[0]: \"layer\" = 3 is out of range [0, 2]"},
        {[](json& j) { j["layers"].push_back(j["layers"][0]); }, "layers[1]: layer 1 is given twice"},
        {[](json& j) { j["layers"][0]["ranks"].push_back(json::array()); },
         "\"ranks\" has 3 entries, the world size is 2"},
        {[](json& j) {
             j["layers"][0]["ranks"][1] = json::array({2, 3, 0, 1, 2});
         },
         "ranks[1] has 5 slots, more than the 4 experts"},
        {[](json& j) { j["layers"][0]["ranks"][1][0] = "2"; }, "ranks[1][0] = \"2\" is not an expert id"},
        {[](json& j) { j["layers"][0]["ranks"][1][0] = 2.0; }, "ranks[1][0] = 2.0 is not an expert id"},
        {[](json& j) { j["layers"][0]["ranks"][1][0] = 4294967298ll; }, "ranks[1][0] = 4294967298 is not an expert id"},
        {[](json& j) { j["layers"][0]["ranks"][1][0] = -2; }, "ranks[1][0] = -2 is not an expert id"},
        {[](json& j) {
             j["layers"][0]["ranks"][1] = json::array({3, 3});
         },
         "rank 1 holds expert 3 twice"},
        {[](json& j) { j["layers"][0]["ranks"][1] = json::array({3}); }, "expert 2 is held by no rank"},
        {[](json& j) { j["layers"][0]["ranks"][0] = 7; }, "ranks[0] must be an array"},
    };
    for (const Case& c : cases) {
        json j = placement_file({{0, 1, 3}, {2, 3}});
        c.edit(j);
        auto p = EpPlacement::from_json(j, 3, 4, 2, "hostile.json");
        ASSERT_FALSE(p.ok()) << c.what;
        EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument) << c.what;
        EXPECT_NE(p.status().message().find(c.what), std::string::npos) << p.status().message();
        EXPECT_NE(p.status().message().find("hostile.json"), std::string::npos) << p.status().message();
    }
    auto missing = EpPlacement::load("/nonexistent/placement.json", 3, 4, 2);
    EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
}

TEST(ExpertCounts, ParseAndRoundTrip) {
    json j{{"num_layers", 4}, {"num_experts", 3}, {"layers", {{{"layer", 2}, {"counts", {5, 0, 9}}}}}};
    auto c = parse_expert_counts(j, "counts.json");
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    EXPECT_EQ(c->layer_ids, std::vector<int>{2});
    EXPECT_EQ(c->counts[0], (std::vector<int64_t>{5, 0, 9}));
    EXPECT_EQ(expert_counts_to_json(*c), j);
}

TEST(ExpertCounts, HostileCountsRefused) {
    const std::vector<std::pair<json, std::string>> cases = {
        {json{{"num_layers", 4}, {"num_experts", 3}, {"layers", {{{"layer", 0}, {"counts", {1, 2}}}}}},
         "\"counts\" has 2 entries, num_experts is 3"},
        {json{{"num_layers", 4}, {"num_experts", 3}, {"layers", {{{"layer", 0}, {"counts", {1, -2, 3}}}}}},
         "counts[1] = -2 is not a token count"},
        {json{{"num_layers", 4}, {"num_experts", 3}, {"layers", {{{"layer", 0}, {"counts", {1, 0.5, 3}}}}}},
         "counts[1] = 0.5"},
        {json{{"num_layers", 4}, {"num_experts", 3}, {"layers", {{{"layer", 0}, {"counts", {1, 1e300, 3}}}}}},
         "counts[1]"},
        {json{{"num_layers", 4},
              {"num_experts", 3},
              {"layers", {{{"layer", 0}, {"counts", {1, 2, 3}}}, {{"layer", 0}, {"counts", {1, 2, 3}}}}}},
         "layer 0 is given twice"},
        {json{{"num_layers", 4}, {"num_experts", 3}, {"layers", {{{"layer", 4}, {"counts", {1, 2, 3}}}}}},
         "\"layer\" = 4 is out of range [0, 3]"},
        {json{{"num_layers", 4}, {"num_experts", 0}, {"layers", json::array()}}, "\"num_experts\" = 0 is out of range"},
        {json{{"num_layers", 4}, {"num_experts", 3}}, "\"layers\" must be an array"},
    };
    for (const auto& [j, what] : cases) {
        auto c = parse_expert_counts(j, "c.json");
        ASSERT_FALSE(c.ok()) << what;
        EXPECT_NE(c.status().message().find(what), std::string::npos) << c.status().message();
    }
}

// Checks the shape every plan must have: E + R slots, rank capacities within one of each
// other, at most one copy of an expert per rank, every expert held.
void expect_valid_plan(const LayerPlacement& p, int num_experts, int world_size, int redundant) {
    EXPECT_EQ(p.num_physical(), num_experts + redundant);
    EXPECT_EQ(p.world_size(), world_size);
    int lo = INT32_MAX, hi = 0;
    for (int r = 0; r < world_size; ++r) {
        const auto l = p.local_experts(r);
        lo = std::min(lo, static_cast<int>(l.size()));
        hi = std::max(hi, static_cast<int>(l.size()));
        EXPECT_TRUE(std::is_sorted(l.begin(), l.end()));
        EXPECT_EQ(std::set<int32_t>(l.begin(), l.end()).size(), l.size());
    }
    EXPECT_LE(hi - lo, 1);
    for (int e = 0; e < num_experts; ++e) EXPECT_GE(p.replicas(e).size(), 1u);
}

TEST(EpPlanner, HotExpertsGetTheReplicasAndBalanceImproves) {
    // Expert 5 takes half the traffic, expert 2 a quarter.
    const std::vector<int64_t> counts{10, 10, 400, 10, 10, 800, 10, 10, 20, 10, 10, 10, 10, 10, 10, 50};
    auto base = LayerPlacement::contiguous(16, 4);
    ASSERT_TRUE(base.ok());
    const double before = placement_imbalance(*base, counts);
    auto p = plan_layer(counts, 4, 4);
    ASSERT_TRUE(p.ok()) << p.status().to_string();
    expect_valid_plan(*p, 16, 4, 4);
    // Slots go to the highest load per replica: 5 (800 -> 400), 2 (400 tie, lower id -> 200),
    // 5 (400 -> 267), 5 (267 -> 200).
    EXPECT_EQ(p->replicas(5).size(), 4u);
    EXPECT_EQ(p->replicas(2).size(), 2u);
    const double after = placement_imbalance(*p, counts);
    EXPECT_LT(after, before);
    EXPECT_LT(after, 1.25) << "before " << before;
    // Deterministic.
    auto again = plan_layer(counts, 4, 4);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again->rank_lists(), p->rank_lists());
}

TEST(EpPlanner, NoRedundancyStillBalances) {
    const std::vector<int64_t> counts{100, 90, 80, 1, 1, 1};
    auto p = plan_layer(counts, 3, 0);
    ASSERT_TRUE(p.ok());
    expect_valid_plan(*p, 6, 3, 0);
    // The three heavy experts land on three different ranks.
    std::set<int> ranks;
    for (int e = 0; e < 3; ++e) ranks.insert(p->rank_of_physical(p->replicas(e)[0]));
    EXPECT_EQ(ranks.size(), 3u);
}

TEST(EpPlanner, RandomLoadsAlwaysGiveValidPlans) {
    std::mt19937 rng(1234);
    for (int trial = 0; trial < 300; ++trial) {
        const int n = 1 + static_cast<int>(rng() % 6);
        const int e = 1 + static_cast<int>(rng() % 12);
        const int r = static_cast<int>(rng() % (e * (n - 1) + 1));
        std::vector<int64_t> counts(static_cast<size_t>(e));
        for (auto& c : counts) c = (rng() % 4 == 0) ? 0 : static_cast<int64_t>(rng() % 1000);
        auto p = plan_layer(counts, n, r);
        ASSERT_TRUE(p.ok()) << "seed 1234 trial " << trial << ": " << p.status().to_string();
        expect_valid_plan(*p, e, n, r);
        for (int x = 0; x < e; ++x) ASSERT_LE(p->replicas(x).size(), static_cast<size_t>(n));
        auto q = ep_detail::plan_layer_ryser(counts, n, r);
        ASSERT_TRUE(q.ok()) << "seed 1234 trial " << trial << ": " << q.status().to_string();
        expect_valid_plan(*q, e, n, r);
        for (int x = 0; x < e; ++x) ASSERT_EQ(q->replicas(x).size(), p->replicas(x).size());
    }
}

TEST(EpPlanner, RefusesImpossibleRequests) {
    const std::vector<int64_t> counts{1, 2, 3};
    auto p = plan_layer(counts, 2, 4);  // at most 3 * (2 - 1)
    ASSERT_FALSE(p.ok());
    EXPECT_NE(p.status().message().find("--redundant 4: must be in [0, 3]"), std::string::npos) << p.status().message();
    EXPECT_FALSE(plan_layer(counts, 2, -1).ok());
    EXPECT_FALSE(plan_layer(counts, 0, 0).ok());
    const std::vector<int64_t> neg{1, -2};
    EXPECT_FALSE(plan_layer(neg, 2, 0).ok());
}

TEST(EpPlanner, PlanOfCountsFileRoundTripsThroughThePlacementFile) {
    ExpertCounts c;
    c.num_layers = 3;
    c.num_experts = 6;
    c.layer_ids = {0, 2};
    c.counts = {{600, 10, 10, 10, 10, 10}, {1, 1, 1, 1, 1, 300}};
    auto p = plan_placement(c, 2, 2);
    ASSERT_TRUE(p.ok()) << p.status().to_string();
    EXPECT_TRUE(p->layer(1).is_contiguous());
    EXPECT_EQ(p->layer(0).replicas(0).size(), 2u);
    EXPECT_EQ(p->layer(2).replicas(5).size(), 2u);
    auto q = EpPlacement::from_json(p->to_json(), 3, 6, 2, "plan");
    ASSERT_TRUE(q.ok()) << q.status().to_string();
    for (int l = 0; l < 3; ++l) EXPECT_EQ(q->layer(l).rank_lists(), p->layer(l).rank_lists());
}

}  // namespace
}  // namespace moe
