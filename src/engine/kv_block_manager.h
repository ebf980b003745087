// KvBlockManager: which KV-cache blocks belong to which sequence. Pure host bookkeeping; the
// memory itself is model/kv_cache.h.
//
// Blocks are fixed-size (block_size tokens) and reference-counted. With prefix caching, a FULL
// block whose KV has been computed is indexed by a chained hash
//     hash_i = SHA-256(hash_{i-1} || token ids of block i (int32 little-endian) || salt)
// so a later sequence with the same first tokens (and salt) attaches those blocks instead of
// recomputing them. Unreferenced indexed blocks stay cached on an LRU list and are evicted,
// oldest first, only when a free block is needed.
//
//   free list:   never-indexed blocks with no owner
//   LRU list:    indexed blocks with no owner (still hit-able), oldest at the front
//   owned:       refcount >= 1 (shared when several sequences attached the same prefix)
//
// Not thread-safe: the engine thread owns it.
#pragma once

#include <cstdint>
#include <cstring>
#include <list>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/sha256.h"

namespace moe {

using SeqId = uint64_t;

struct KvBlockManagerOptions {
    int64_t num_blocks = 0;
    int64_t block_size = 16;
    bool prefix_caching = true;
};

class KvBlockManager {
public:
    explicit KvBlockManager(const KvBlockManagerOptions& options);

    // Attaches the longest cached prefix of `tokens` in FULL blocks, never all of `tokens` (one
    // token at least must be computed so the model produces logits): refcount++ on each, and an
    // unreferenced one leaves the LRU list. Call before the first allocate() of seq (checked).
    // Returns the number of tokens covered (a multiple of block_size; 0 without prefix caching).
    int64_t attach_prefix(SeqId seq, std::span<const int32_t> tokens, const std::string& salt);

    // Grows seq's table to cover num_tokens tokens. All or nothing: false, allocating nothing,
    // when not enough blocks are allocatable (never used first, then unreferenced cached blocks,
    // least recently freed first; an evicted block leaves the prefix index).
    bool allocate(SeqId seq, int64_t num_tokens);

    // The KV of tokens[0, num_computed) of seq is in the cache: indexes seq's newly full blocks.
    // When an identical block (same chained hash) is already indexed, that one stays indexed and
    // seq keeps its own copy unindexed (its table is not rewritten under a running sequence).
    void commit(SeqId seq, std::span<const int32_t> tokens, int64_t num_computed, const std::string& salt);

    // Releases seq (unknown seq: no-op). Blocks reaching refcount 0 go to the LRU list if indexed
    // (tail blocks first, so a prefix's head outlives its tail), else to the free list.
    void free(SeqId seq);

    std::span<const int32_t> block_table(SeqId seq) const;  // empty if unknown
    // The chained hashes of seq's committed full blocks, in table order (empty if unknown or
    // without prefix caching).
    std::span<const Sha256Digest> block_hashes(SeqId seq) const;
    int64_t num_free_blocks() const { return static_cast<int64_t>(free_.size() + lru_.size()); }  // free + evictable
    int64_t num_total_blocks() const { return static_cast<int64_t>(blocks_.size()); }
    int64_t num_cached_blocks() const { return static_cast<int64_t>(index_.size()); }  // in the prefix index
    int64_t block_size() const { return block_size_; }
    int64_t blocks_for(int64_t num_tokens) const { return (num_tokens + block_size_ - 1) / block_size_; }

    // Introspection for tests and metrics.
    int32_t ref_count(int32_t block) const { return blocks_[static_cast<size_t>(block)].ref; }
    bool is_cached(int32_t block) const;  // in the prefix index
    // Cached blocks that would be evicted next, in eviction order.
    std::vector<int32_t> evictable_blocks() const { return {lru_.begin(), lru_.end()}; }

    // hash = SHA-256(parent || token ids (int32 little-endian) || salt); the first block's parent
    // is 32 zero bytes. Every field before the salt has a fixed length, so no two (parent,
    // tokens, salt) triples of one block size feed the same bytes.
    static Sha256Digest chain_hash(const Sha256Digest* parent, std::span<const int32_t> tokens,
                                   const std::string& salt);

    // Checks every invariant (tests): refcounts equal table occurrences; no block twice in one
    // table; a block in two tables is a cached one (sharing only comes from attach_prefix); each
    // block in exactly one of free / LRU / owned; free + owned == total; the index points at
    // blocks holding that hash.
    bool check_invariants(std::string* why) const;

    // ---- prefix-cache events (the KV-aware router's view of this cache, via KvEventHub)
    // With recording on, every change of the prefix index is noted as a net change since the
    // last take_events(): a hash stored then evicted (or evicted then stored again) in between
    // cancels out, so a receiver applying `stored` then `evicted` in any order ends with the
    // index's exact key set. Memory is bounded by the index's size (one entry per hash).
    struct Events {
        std::vector<Sha256Digest> stored;
        std::vector<Sha256Digest> evicted;
        bool empty() const { return stored.empty() && evicted.empty(); }
    };
    void set_record_events(bool on);
    bool record_events() const { return record_events_; }
    // The net changes since the last call (or since recording began); clears them.
    Events take_events();
    // Every hash in the prefix index now (a snapshot; order unspecified).
    std::vector<Sha256Digest> cached_hashes() const;

private:
    struct Block {
        int32_t ref = 0;
        std::optional<Sha256Digest> hash;  // set while indexed
        bool in_lru = false;
        std::list<int32_t>::iterator lru_it;
    };
    struct SeqBlocks {
        std::vector<int32_t> table;
        std::vector<Sha256Digest> hashes;  // of the committed full blocks, in order
    };
    struct DigestHash {
        size_t operator()(const Sha256Digest& d) const {
            size_t h;
            std::memcpy(&h, d.data(), sizeof(h));
            return h;
        }
    };

    int32_t take_block();  // caller checked num_free_blocks() > 0
    void note_event(const Sha256Digest& h, bool stored);

    int64_t block_size_;
    bool prefix_caching_;
    std::vector<Block> blocks_;
    std::vector<int32_t> free_;
    std::list<int32_t> lru_;
    std::unordered_map<Sha256Digest, int32_t, DigestHash> index_;
    std::unordered_map<SeqId, SeqBlocks> seqs_;
    bool record_events_ = false;
    std::unordered_map<Sha256Digest, bool, DigestHash> pending_events_;  // hash -> stored (true) / evicted
};

}  // namespace moe
