// The prefix-cache event hook (KvBlockManager::take_events) and its fan-out (KvEventHub).
#include <gtest/gtest.h>

#include <atomic>
#include <numeric>
#include <random>
#include <set>
#include <thread>

#include "engine/kv_block_manager.h"
#include "engine/kv_event_hub.h"

namespace moe {
namespace {

std::vector<int32_t> tokens_from(int n, int start) {
    std::vector<int32_t> t(static_cast<size_t>(n));
    std::iota(t.begin(), t.end(), start);
    return t;
}

std::set<Sha256Digest> as_set(const std::vector<Sha256Digest>& v) {
    return {v.begin(), v.end()};
}

// Applies a batch to a receiver's view, as the router does.
void apply_batch(std::set<Sha256Digest>& view, const KvEventBatch& b) {
    if (b.reset) view.clear();
    for (const auto& h : b.stored) view.insert(h);
    for (const auto& h : b.evicted) view.erase(h);
}

TEST(KvEvents, StoredHashesAreTheChainedHashesWithSalt) {
    KvBlockManager kv({.num_blocks = 8, .block_size = 4});
    kv.set_record_events(true);
    const auto t = tokens_from(10, 100);  // 2 full blocks + 2 tokens
    ASSERT_EQ(kv.attach_prefix(1, t, "salt"), 0);
    ASSERT_TRUE(kv.allocate(1, 10));
    kv.commit(1, t, 10, "salt");
    const auto h0 = KvBlockManager::chain_hash(nullptr, std::span(t).subspan(0, 4), "salt");
    const auto h1 = KvBlockManager::chain_hash(&h0, std::span(t).subspan(4, 4), "salt");
    auto e = kv.take_events();
    EXPECT_EQ(as_set(e.stored), (std::set<Sha256Digest>{h0, h1}));
    EXPECT_TRUE(e.evicted.empty());
    // Taken: nothing left; a second commit of the same blocks notes nothing.
    kv.commit(1, t, 10, "salt");
    EXPECT_TRUE(kv.take_events().empty());
    EXPECT_EQ(as_set(kv.cached_hashes()), (std::set<Sha256Digest>{h0, h1}));
}

TEST(KvEvents, EvictionIsReportedAndNetChangesCancel) {
    KvBlockManager kv({.num_blocks = 2, .block_size = 4});
    kv.set_record_events(true);
    const auto a = tokens_from(8, 0);
    ASSERT_TRUE(kv.allocate(1, 8));
    kv.commit(1, a, 8, "");
    kv.free(1);  // both blocks cached, unreferenced
    const auto first = kv.take_events();
    ASSERT_EQ(first.stored.size(), 2u);
    // Another sequence needs both blocks: both hashes evicted.
    const auto b = tokens_from(8, 50);
    ASSERT_EQ(kv.attach_prefix(2, b, ""), 0);
    ASSERT_TRUE(kv.allocate(2, 8));
    auto e = kv.take_events();
    EXPECT_TRUE(e.stored.empty());
    EXPECT_EQ(as_set(e.evicted), as_set(first.stored));
    // Stored then evicted between two takes: nothing to report.
    kv.commit(2, b, 8, "");
    kv.free(2);
    ASSERT_TRUE(kv.allocate(3, 8));  // evicts both of b's blocks again
    EXPECT_TRUE(kv.take_events().empty());
    std::string why;
    EXPECT_TRUE(kv.check_invariants(&why)) << why;
}

TEST(KvEvents, RecordingOffNotesNothing) {
    KvBlockManager kv({.num_blocks = 4, .block_size = 2});
    const auto t = tokens_from(4, 0);
    ASSERT_TRUE(kv.allocate(1, 4));
    kv.commit(1, t, 4, "");
    EXPECT_TRUE(kv.take_events().empty());
}

// A random workload: a receiver applying every batch ends with exactly the index's key set.
TEST(KvEvents, ReceiverViewMatchesTheIndexUnderRandomWork) {
    KvBlockManager kv({.num_blocks = 12, .block_size = 2});
    kv.set_record_events(true);
    auto hub = std::make_shared<KvEventHub>();
    auto sub = hub->subscribe();
    std::set<Sha256Digest> view;
    std::mt19937 rng(7);
    std::set<SeqId> live;
    SeqId next = 1;
    for (int step = 0; step < 400; ++step) {
        if (!live.empty() && (rng() % 3 == 0 || live.size() > 3)) {
            auto it = live.begin();
            std::advance(it, rng() % live.size());
            kv.free(*it);
            live.erase(it);
        } else {
            // Prompts from a few shared prefixes, so that attach, commit and evict all happen.
            std::vector<int32_t> t(static_cast<size_t>(2 + rng() % 7));
            const int32_t base = static_cast<int32_t>(rng() % 3) * 100;
            for (size_t i = 0; i < t.size(); ++i) t[i] = base + static_cast<int32_t>(i < 4 ? i : rng() % 5);
            const SeqId s = next++;
            kv.attach_prefix(s, t, "");
            if (kv.allocate(s, static_cast<int64_t>(t.size()))) {
                kv.commit(s, t, static_cast<int64_t>(t.size()), "");
                live.insert(s);
            } else {
                kv.free(s);
            }
        }
        if (step % 5 == 0) hub->publish(kv.take_events(), KvLoadInfo{.kv_blocks_free = kv.num_free_blocks()});
        KvEventBatch b;
        while (sub->try_next(&b)) apply_batch(view, b);
    }
    hub->publish(kv.take_events(), KvLoadInfo{.kv_blocks_free = -1});
    KvEventBatch b;
    while (sub->try_next(&b)) apply_batch(view, b);
    EXPECT_EQ(view, as_set(kv.cached_hashes()));
    EXPECT_EQ(hub->num_cached(), kv.num_cached_blocks());
}

Sha256Digest digest(int i) {
    Sha256Digest d{};
    std::memcpy(d.data(), &i, sizeof(i));
    return d;
}

TEST(KvEventHub, FirstMessageIsASnapshotThenBatches) {
    auto hub = std::make_shared<KvEventHub>();
    hub->publish({.stored = {digest(1), digest(2)}}, {.kv_blocks_total = 8, .kv_blocks_free = 6});
    auto sub = hub->subscribe();
    KvEventBatch b;
    ASSERT_TRUE(sub->try_next(&b));
    EXPECT_TRUE(b.reset);
    EXPECT_EQ(as_set(b.stored), (std::set<Sha256Digest>{digest(1), digest(2)}));
    EXPECT_EQ(b.load.kv_blocks_free, 6);
    EXPECT_FALSE(sub->try_next(&b));
    hub->publish({.evicted = {digest(1)}}, {.kv_blocks_total = 8, .kv_blocks_free = 7});
    ASSERT_TRUE(sub->try_next(&b));
    EXPECT_FALSE(b.reset);
    EXPECT_EQ(b.evicted, std::vector<Sha256Digest>{digest(1)});
    EXPECT_EQ(b.load.kv_blocks_free, 7);
    // Nothing changed: nothing queued.
    hub->publish({}, {.kv_blocks_total = 8, .kv_blocks_free = 7});
    EXPECT_FALSE(sub->try_next(&b));
}

TEST(KvEventHub, SlowSubscriberGetsAResetNotUnboundedMemory) {
    auto hub = std::make_shared<KvEventHub>(KvEventHub::Options{.max_queued_hashes = 10});
    auto slow = hub->subscribe();
    KvEventBatch b;
    ASSERT_TRUE(slow->try_next(&b));  // the (empty) snapshot
    for (int i = 0; i < 100; ++i) hub->publish({.stored = {digest(i)}}, {});
    EXPECT_EQ(hub->num_resets(), 1);
    // Its next read is a snapshot of everything, then nothing more.
    ASSERT_TRUE(slow->try_next(&b));
    EXPECT_TRUE(b.reset);
    EXPECT_EQ(b.stored.size(), 100u);
    EXPECT_FALSE(slow->try_next(&b));
    // Queued batches after that point come in order.
    hub->publish({.evicted = {digest(3)}}, {});
    ASSERT_TRUE(slow->try_next(&b));
    EXPECT_FALSE(b.reset);
    EXPECT_EQ(b.evicted.size(), 1u);
}

TEST(KvEventHub, WakeIsCalledAndCloseEndsSubscriptions) {
    auto hub = std::make_shared<KvEventHub>();
    std::atomic<int> wakes{0};
    auto sub = hub->subscribe([&] { ++wakes; });
    KvEventBatch snap;
    ASSERT_TRUE(sub->try_next(&snap));
    hub->publish({.stored = {digest(1)}}, {});
    EXPECT_EQ(wakes.load(), 1);
    std::thread reader([&] {
        KvEventBatch b;
        int got = 0;
        while (sub->next(&b, std::chrono::seconds(30))) ++got;
        EXPECT_EQ(got, 1);  // the one batch, then the end (not a 30 s timeout)
        EXPECT_TRUE(sub->closed());
    });
    hub->close();
    reader.join();
    EXPECT_EQ(wakes.load(), 2);
    sub->cancel();
    EXPECT_EQ(hub->num_subscribers(), 0);
}

}  // namespace
}  // namespace moe
