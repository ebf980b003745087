// The router's pure routing rules (src/router/routing_policy.h).
#include "router/routing_policy.h"

#include <gtest/gtest.h>

#include <numeric>

#include "engine/kv_block_manager.h"

namespace moe::router {
namespace {

WorkerState idle(int64_t free_blocks = 100) {
    return WorkerState{.healthy = true, .kv_blocks_free = free_blocks, .kv_blocks_total = 100};
}

TEST(RoutingPolicy, PrefillGoesWhereThePrefixIsCached) {
    std::vector<WorkerState> w = {idle(), idle(), idle()};
    w[2].cached_prefix_blocks = 3;
    EXPECT_EQ(pick_prefill(w, {.prompt_blocks = 4}), 2);
    // A longer cached prefix beats a shorter one.
    w[0].cached_prefix_blocks = 4;
    EXPECT_EQ(pick_prefill(w, {.prompt_blocks = 4}), 0);
}

TEST(RoutingPolicy, PrefillWeighsLoadAgainstTheSaving) {
    std::vector<WorkerState> w = {idle(), idle()};
    w[1].cached_prefix_blocks = 2;  // saves 2 blocks
    w[1].num_waiting = 1;           // but one prompt (4 blocks) is queued ahead
    EXPECT_EQ(pick_prefill(w, {.prompt_blocks = 4}), 0);
    // With the queued request counted as 1 block only, the saving wins.
    EXPECT_EQ(pick_prefill(w, {.prompt_blocks = 4, .load_blocks_per_request = 1}), 1);
    // The router's own requests in flight count like waiting ones.
    w[1].num_waiting = 0;
    w[1].in_flight = 1;
    EXPECT_EQ(pick_prefill(w, {.prompt_blocks = 4}), 0);
}

TEST(RoutingPolicy, PrefillTiesGoToMoreFreeBlocksThenTheFirst) {
    std::vector<WorkerState> w = {idle(50), idle(80), idle(80)};
    EXPECT_EQ(pick_prefill(w, {.prompt_blocks = 2}), 1);
    // A prompt shorter than a block (0 full blocks) still gets a worker.
    EXPECT_EQ(pick_prefill(w, {.prompt_blocks = 0}), 1);
}

TEST(RoutingPolicy, UnhealthyAndExcludedWorkersAreNeverChosen) {
    std::vector<WorkerState> w = {idle(), idle()};
    w[0].cached_prefix_blocks = 4;
    w[0].healthy = false;
    EXPECT_EQ(pick_prefill(w, {.prompt_blocks = 4}), 1);
    const std::vector<int> tried = {1};
    EXPECT_EQ(pick_prefill(w, {.prompt_blocks = 4}, tried), -1);
    w[0].healthy = true;
    EXPECT_EQ(pick_prefill(w, {.prompt_blocks = 4}, tried), 0);
    EXPECT_EQ(pick_decode(w, 4, std::vector<int>{0, 1}), -1);
    EXPECT_EQ(pick_prefill(std::vector<WorkerState>{}, {.prompt_blocks = 1}), -1);
}

TEST(RoutingPolicy, DecodeGoesToTheMostHeadroom) {
    std::vector<WorkerState> w = {idle(30), idle(60), idle(40)};
    EXPECT_EQ(pick_decode(w, 5), 1);
    // The router's in-flight requests there are counted before the worker reports them.
    w[1].in_flight = 5;  // 60 - 5 * 5 = 35 < 40
    EXPECT_EQ(pick_decode(w, 5), 2);
    // Equal headroom: fewer running.
    std::vector<WorkerState> t = {idle(40), idle(40)};
    t[0].num_running = 3;
    EXPECT_EQ(pick_decode(t, 5), 1);
    // No room anywhere: still the most headroom (the worker queues it).
    std::vector<WorkerState> full = {idle(0), idle(2)};
    EXPECT_EQ(pick_decode(full, 10), 1);
}

TEST(RoutingPolicy, PromptHashesAreTheBlockManagersChain) {
    std::vector<int32_t> t(37);
    std::iota(t.begin(), t.end(), 5);
    const auto h = prompt_block_hashes(t, 16, "tenant");
    ASSERT_EQ(h.size(), 2u);  // full blocks only
    // The block manager indexes exactly these after computing the prompt.
    KvBlockManager kv({.num_blocks = 8, .block_size = 16});
    ASSERT_TRUE(kv.allocate(1, 37));
    kv.commit(1, t, 37, "tenant");
    HashSet cached;
    for (const auto& d : kv.cached_hashes()) cached.insert(d);
    EXPECT_EQ(leading_cached_blocks(h, cached), 2);
    // Another salt: nothing matches.
    EXPECT_EQ(leading_cached_blocks(prompt_block_hashes(t, 16, "other"), cached), 0);
    // A prompt that diverges in its second block matches one block.
    auto u = t;
    u[20] = 999;
    EXPECT_EQ(leading_cached_blocks(prompt_block_hashes(u, 16, "tenant"), cached), 1);
    // A chain: the second block alone (first evicted) does not count.
    cached.erase(h[0]);
    EXPECT_EQ(leading_cached_blocks(h, cached), 0);
    EXPECT_TRUE(prompt_block_hashes(t, 0, "").empty());
}

}  // namespace
}  // namespace moe::router
