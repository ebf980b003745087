#include "engine/kv_block_manager.h"

#include <gtest/gtest.h>

#include <numeric>

#include "engine/sha256.h"

namespace moe {
namespace {

TEST(Sha256, Fips180Vectors) {
    EXPECT_EQ(Sha256::hex(Sha256::of("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    EXPECT_EQ(Sha256::hex(Sha256::of("")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    EXPECT_EQ(Sha256::hex(Sha256::of("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
              "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    // Fed in pieces: the same digest.
    Sha256 s;
    const std::string m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    for (char c : m) s.update(&c, 1);
    EXPECT_EQ(Sha256::hex(s.finish()), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

std::vector<int32_t> iota_tokens(int n, int start = 0) {
    std::vector<int32_t> t(static_cast<size_t>(n));
    std::iota(t.begin(), t.end(), start);
    return t;
}

void expect_ok(const KvBlockManager& kv) {
    std::string why;
    EXPECT_TRUE(kv.check_invariants(&why)) << why;
}

TEST(KvBlockManager, AllocateIsAllOrNothing) {
    KvBlockManager kv({.num_blocks = 4, .block_size = 4});
    EXPECT_TRUE(kv.allocate(1, 9));  // 3 blocks
    EXPECT_EQ(kv.block_table(1).size(), 3u);
    EXPECT_FALSE(kv.allocate(2, 8));  // needs 2, 1 free: nothing taken
    EXPECT_EQ(kv.num_free_blocks(), 1);
    EXPECT_TRUE(kv.allocate(1, 12));  // same 3 blocks suffice
    EXPECT_TRUE(kv.allocate(1, 13));
    EXPECT_EQ(kv.num_free_blocks(), 0);
    expect_ok(kv);
    kv.free(1);
    EXPECT_EQ(kv.num_free_blocks(), 4);
    expect_ok(kv);
}

TEST(KvBlockManager, PrefixHitSharesFullBlocksAndNeverTheWholePrompt) {
    KvBlockManager kv({.num_blocks = 16, .block_size = 4});
    const auto prompt = iota_tokens(10);  // blocks [0-3] [4-7] [8-9]
    EXPECT_EQ(kv.attach_prefix(1, prompt, ""), 0);
    ASSERT_TRUE(kv.allocate(1, 10));
    kv.commit(1, prompt, 10, "");  // two full blocks indexed
    EXPECT_EQ(kv.num_cached_blocks(), 2);
    EXPECT_EQ(kv.attach_prefix(2, prompt, ""), 8);
    EXPECT_EQ(kv.block_table(2)[0], kv.block_table(1)[0]);
    EXPECT_EQ(kv.block_table(2)[1], kv.block_table(1)[1]);
    EXPECT_EQ(kv.ref_count(kv.block_table(1)[0]), 2);
    // A prompt of exactly 8 tokens may attach only the first block: one token must be computed.
    EXPECT_EQ(kv.attach_prefix(3, iota_tokens(8), ""), 4);
    // Another salt sees nothing.
    EXPECT_EQ(kv.attach_prefix(4, prompt, "tenant-b"), 0);
    // A different first block breaks the chain even if the second block's tokens match.
    auto other = prompt;
    other[0] = 99;
    EXPECT_EQ(kv.attach_prefix(5, other, ""), 0);
    expect_ok(kv);
    for (SeqId s : {1, 2, 3, 4, 5}) kv.free(s);
    EXPECT_EQ(kv.num_free_blocks(), 16);
    EXPECT_EQ(kv.num_cached_blocks(), 2);  // still cached, evictable
    expect_ok(kv);
}

TEST(KvBlockManager, EvictsLeastRecentlyFreedCachedBlocksLast) {
    KvBlockManager kv({.num_blocks = 4, .block_size = 2});
    const auto a = iota_tokens(5, 0), b = iota_tokens(5, 100);
    ASSERT_TRUE(kv.allocate(1, 5));  // 3 blocks, 2 full
    kv.commit(1, a, 5, "");
    kv.free(1);  // a's 2 full blocks on the LRU list, its partial block on the free list
    EXPECT_EQ(kv.num_cached_blocks(), 2);
    ASSERT_TRUE(kv.allocate(2, 5));  // 3 blocks: the 2 free ones first, then one evicted
    EXPECT_EQ(kv.num_cached_blocks(), 1);
    // The block freed first (a's tail block, freed tail-first) was evicted; a's head stays.
    EXPECT_EQ(kv.attach_prefix(3, a, ""), 2);
    kv.free(3);
    kv.free(2);
    (void)b;
    expect_ok(kv);
}

TEST(KvBlockManager, IdenticalBlockComputedTwiceKeepsOneIndexEntry) {
    KvBlockManager kv({.num_blocks = 8, .block_size = 2});
    const auto t = iota_tokens(4);
    ASSERT_TRUE(kv.allocate(1, 4));
    ASSERT_TRUE(kv.allocate(2, 4));  // both computed the same tokens before either committed
    kv.commit(1, t, 4, "");
    kv.commit(2, t, 4, "");
    EXPECT_EQ(kv.num_cached_blocks(), 2);
    kv.free(1);
    kv.free(2);
    EXPECT_EQ(kv.num_free_blocks(), 8);
    expect_ok(kv);
}

}  // namespace
}  // namespace moe
