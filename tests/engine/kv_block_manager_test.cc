#include "engine/kv_block_manager.h"

#include <gtest/gtest.h>

#include <map>
#include <numeric>
#include <tuple>

#include "core/sha256.h"

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

// FIPS 180-2 appendix B.3 (one million 'a', many blocks), and the padding boundaries: a message
// of 55 bytes still fits its length in the last block, 56..63 need one more block. Expected
// digests from Python's hashlib.
TEST(Sha256, LongMessageAndPaddingBoundaries) {
    EXPECT_EQ(Sha256::hex(Sha256::of(std::string(1000000, 'a'))),
              "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    const std::pair<size_t, const char*> cases[] = {
        {55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"},
        {56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"},
        {63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34"},
        {64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"},
        {65, "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0"}};
    for (const auto& [n, want] : cases) EXPECT_EQ(Sha256::hex(Sha256::of(std::string(n, 'a'))), want) << n << " bytes";
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
    for (size_t i = 0; i < 2; ++i) {  // the first indexed copy stays; seq 2 keeps its own table
        EXPECT_TRUE(kv.is_cached(kv.block_table(1)[i]));
        EXPECT_FALSE(kv.is_cached(kv.block_table(2)[i]));
    }
    expect_ok(kv);
    kv.free(2);  // its copies were never indexed: straight to the free list
    EXPECT_TRUE(kv.evictable_blocks().empty());
    EXPECT_EQ(kv.num_free_blocks(), 6);
    kv.free(1);  // seq 1's are: they wait on the LRU list
    EXPECT_EQ(kv.evictable_blocks().size(), 2u);
    EXPECT_EQ(kv.num_free_blocks(), 8);
    expect_ok(kv);
}

// The chained hash is SHA-256 over exactly parent || int32 LE token ids || salt, and the first
// block's parent is 32 zero bytes.
TEST(KvBlockManager, ChainHashIsSha256OfParentTokensAndSalt) {
    const std::vector<int32_t> t0 = {1, 0x01020304, -1, 7}, t1 = {5, 6, 7, 8};
    auto bytes_of = [](const Sha256Digest& parent, const std::vector<int32_t>& t, const std::string& salt) {
        std::string b(parent.begin(), parent.end());
        for (int32_t v : t)
            for (int k = 0; k < 4; ++k) b.push_back(static_cast<char>((static_cast<uint32_t>(v) >> (8 * k)) & 0xff));
        return b + salt;
    };
    const Sha256Digest h0 = KvBlockManager::chain_hash(nullptr, t0, "s");
    EXPECT_EQ(h0, Sha256::of(bytes_of(Sha256Digest{}, t0, "s")));
    EXPECT_EQ(KvBlockManager::chain_hash(&h0, t1, ""), Sha256::of(bytes_of(h0, t1, "")));
    EXPECT_NE(KvBlockManager::chain_hash(nullptr, t0, ""), h0);  // the salt matters
    // Spot-check the byte order: 0x01020304 is fed as 04 03 02 01.
    EXPECT_EQ(bytes_of(Sha256Digest{}, t0, "").substr(36, 4), std::string("\x04\x03\x02\x01", 4));
}

// Three cached prefixes freed in the order B, A, C are evicted in that order, each tail block
// before its head; attaching a cached block takes it off the LRU list, and freeing it again
// puts it at the back (most recently used).
TEST(KvBlockManager, LruEvictionOrder) {
    KvBlockManager kv({.num_blocks = 7, .block_size = 2});
    const auto a = iota_tokens(4, 0), b = iota_tokens(4, 100), c = iota_tokens(4, 200);
    std::map<char, std::vector<int32_t>> table;
    for (auto [name, seq, toks] : {std::tuple{'A', 1, &a}, std::tuple{'B', 2, &b}, std::tuple{'C', 3, &c}}) {
        ASSERT_TRUE(kv.allocate(static_cast<SeqId>(seq), 4));
        kv.commit(static_cast<SeqId>(seq), *toks, 4, "");
        const auto t = kv.block_table(static_cast<SeqId>(seq));
        table[name] = {t.begin(), t.end()};
    }
    EXPECT_EQ(kv.num_cached_blocks(), 6);
    EXPECT_EQ(kv.num_free_blocks(), 1);
    kv.free(2);  // B
    kv.free(1);  // A
    kv.free(3);  // C
    expect_ok(kv);
    //   LRU front -> back:  B1 B0 A1 A0 C1 C0   (tail block first within a sequence)
    EXPECT_EQ(kv.evictable_blocks(), (std::vector<int32_t>{table['B'][1], table['B'][0], table['A'][1], table['A'][0],
                                                           table['C'][1], table['C'][0]}));
    // A is used again: its head leaves the LRU list (2 tokens of 4+1 hit: A0 and A1).
    auto a_longer = a;
    a_longer.push_back(9);
    EXPECT_EQ(kv.attach_prefix(4, a_longer, ""), 4);
    EXPECT_EQ(kv.num_free_blocks(), 5);
    kv.free(4);  // back of the LRU list now: A1 then A0
    EXPECT_EQ(kv.evictable_blocks(), (std::vector<int32_t>{table['B'][1], table['B'][0], table['C'][1], table['C'][0],
                                                           table['A'][1], table['A'][0]}));
    // One never-used block, then evictions in LRU order: 3 blocks = the free one + B1 + B0.
    ASSERT_TRUE(kv.allocate(5, 6));
    EXPECT_EQ(kv.num_cached_blocks(), 4);
    auto b_longer = b;
    b_longer.push_back(9);
    EXPECT_EQ(kv.attach_prefix(6, b_longer, ""), 0);  // B is gone
    kv.free(6);
    auto c_longer = c;
    c_longer.push_back(9);
    EXPECT_EQ(kv.attach_prefix(7, c_longer, ""), 4);  // C and A survive
    kv.free(7);
    // LRU now: A1 A0 C1 C0 (C was used after A). Two more blocks evict A1 then A0.
    ASSERT_TRUE(kv.allocate(8, 4));
    EXPECT_EQ(kv.num_cached_blocks(), 2);
    EXPECT_EQ(kv.attach_prefix(9, a_longer, ""), 0);
    kv.free(9);
    EXPECT_EQ(kv.attach_prefix(10, c_longer, ""), 4);
    expect_ok(kv);
    for (SeqId s : {5, 8, 10}) kv.free(s);
    EXPECT_EQ(kv.num_free_blocks(), 7);
    expect_ok(kv);
}

TEST(KvBlockManager, WithoutPrefixCachingNothingIsIndexed) {
    KvBlockManager kv({.num_blocks = 4, .block_size = 2, .prefix_caching = false});
    const auto t = iota_tokens(5);
    EXPECT_EQ(kv.attach_prefix(1, t, ""), 0);
    ASSERT_TRUE(kv.allocate(1, 5));
    kv.commit(1, t, 5, "");
    EXPECT_EQ(kv.num_cached_blocks(), 0);
    kv.free(1);
    EXPECT_TRUE(kv.evictable_blocks().empty());
    EXPECT_EQ(kv.attach_prefix(2, t, ""), 0);
    kv.free(2);
    EXPECT_EQ(kv.num_free_blocks(), 4);
    expect_ok(kv);
}

// Attaching an unreferenced cached block makes it unallocatable; the shared block survives the
// first owner's free, and a commit that finds its hash already indexed leaves the index alone.
TEST(KvBlockManager, SharedBlocksOutliveOneOwner) {
    KvBlockManager kv({.num_blocks = 4, .block_size = 2});
    const auto t = iota_tokens(5);
    ASSERT_TRUE(kv.allocate(1, 5));
    kv.commit(1, t, 4, "");
    EXPECT_EQ(kv.attach_prefix(2, t, ""), 4);
    EXPECT_EQ(kv.ref_count(kv.block_table(1)[0]), 2);
    EXPECT_EQ(kv.num_free_blocks(), 1);
    ASSERT_TRUE(kv.allocate(2, 5));  // the last free block for seq 2's own tail
    EXPECT_EQ(kv.num_free_blocks(), 0);
    EXPECT_FALSE(kv.allocate(3, 1));
    EXPECT_TRUE(kv.block_table(3).empty());
    kv.free(3);
    kv.free(1);  // blocks 0, 1 still owned by seq 2; seq 1's tail block is free
    EXPECT_EQ(kv.num_free_blocks(), 1);
    EXPECT_EQ(kv.ref_count(kv.block_table(2)[0]), 1);
    EXPECT_TRUE(kv.is_cached(kv.block_table(2)[0]));
    expect_ok(kv);
    kv.commit(2, t, 5, "");  // nothing new is full; index unchanged
    EXPECT_EQ(kv.num_cached_blocks(), 2);
    kv.free(2);
    EXPECT_EQ(kv.num_free_blocks(), 4);
    expect_ok(kv);
}

}  // namespace
}  // namespace moe
