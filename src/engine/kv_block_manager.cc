#include "engine/kv_block_manager.h"

#include <algorithm>
#include <cstring>

#include "moe/check.h"

namespace moe {

KvBlockManager::KvBlockManager(const KvBlockManagerOptions& o)
    : block_size_(o.block_size), prefix_caching_(o.prefix_caching), blocks_(static_cast<size_t>(o.num_blocks)) {
    MOE_CHECK_GT(o.block_size, 0);
    MOE_CHECK_GE(o.num_blocks, 0);
    // Hand out low block ids first (pop from the back).
    for (int64_t b = o.num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

Sha256Digest KvBlockManager::chain_hash(const Sha256Digest* parent, std::span<const int32_t> tokens,
                                        const std::string& salt) {
    Sha256 h;
    Sha256Digest zero{};
    const Sha256Digest& p = parent ? *parent : zero;
    h.update(p.data(), p.size());
    for (int32_t t : tokens) {
        const uint32_t u = static_cast<uint32_t>(t);
        const uint8_t le[4] = {static_cast<uint8_t>(u), static_cast<uint8_t>(u >> 8), static_cast<uint8_t>(u >> 16),
                               static_cast<uint8_t>(u >> 24)};
        h.update(le, 4);
    }
    h.update(salt.data(), salt.size());
    return h.finish();
}

int64_t KvBlockManager::attach_prefix(SeqId seq, std::span<const int32_t> tokens, const std::string& salt) {
    SeqBlocks& sb = seqs_[seq];
    MOE_CHECK(sb.table.empty());
    if (!prefix_caching_ || tokens.empty()) return 0;
    const int64_t max_blocks = (static_cast<int64_t>(tokens.size()) - 1) / block_size_;
    for (int64_t i = 0; i < max_blocks; ++i) {
        const Sha256Digest h =
            chain_hash(sb.hashes.empty() ? nullptr : &sb.hashes.back(),
                       tokens.subspan(static_cast<size_t>(i * block_size_), static_cast<size_t>(block_size_)), salt);
        auto it = index_.find(h);
        if (it == index_.end()) break;
        Block& b = blocks_[static_cast<size_t>(it->second)];
        if (b.in_lru) {
            lru_.erase(b.lru_it);
            b.in_lru = false;
        }
        ++b.ref;
        sb.table.push_back(it->second);
        sb.hashes.push_back(h);
    }
    return static_cast<int64_t>(sb.table.size()) * block_size_;
}

int32_t KvBlockManager::take_block() {
    int32_t id;
    if (!free_.empty()) {
        id = free_.back();
        free_.pop_back();
    } else {
        MOE_CHECK(!lru_.empty());
        id = lru_.front();  // least recently freed
        lru_.pop_front();
        Block& b = blocks_[static_cast<size_t>(id)];
        b.in_lru = false;
        if (b.hash) {
            auto it = index_.find(*b.hash);
            if (it != index_.end() && it->second == id) {
                index_.erase(it);
                note_event(*b.hash, /*stored=*/false);
            }
            b.hash.reset();
        }
    }
    Block& b = blocks_[static_cast<size_t>(id)];
    MOE_CHECK_EQ(b.ref, 0);
    b.ref = 1;
    return id;
}

bool KvBlockManager::allocate(SeqId seq, int64_t num_tokens) {
    SeqBlocks& sb = seqs_[seq];
    const int64_t need = blocks_for(num_tokens) - static_cast<int64_t>(sb.table.size());
    if (need <= 0) return true;
    if (need > num_free_blocks()) return false;
    for (int64_t i = 0; i < need; ++i) sb.table.push_back(take_block());
    return true;
}

void KvBlockManager::commit(SeqId seq, std::span<const int32_t> tokens, int64_t num_computed, const std::string& salt) {
    if (!prefix_caching_) return;
    auto it = seqs_.find(seq);
    if (it == seqs_.end()) return;
    SeqBlocks& sb = it->second;
    const int64_t full = std::min<int64_t>(num_computed, static_cast<int64_t>(tokens.size())) / block_size_;
    for (int64_t i = static_cast<int64_t>(sb.hashes.size()); i < full && i < static_cast<int64_t>(sb.table.size());
         ++i) {
        const Sha256Digest h =
            chain_hash(sb.hashes.empty() ? nullptr : &sb.hashes.back(),
                       tokens.subspan(static_cast<size_t>(i * block_size_), static_cast<size_t>(block_size_)), salt);
        sb.hashes.push_back(h);
        const int32_t id = sb.table[static_cast<size_t>(i)];
        Block& b = blocks_[static_cast<size_t>(id)];
        if (b.hash) continue;           // attached from the cache: already indexed
        if (index_.count(h)) continue;  // an identical block is cached elsewhere: keep that one
        index_[h] = id;
        b.hash = h;
        note_event(h, /*stored=*/true);
    }
}

void KvBlockManager::free(SeqId seq) {
    auto it = seqs_.find(seq);
    if (it == seqs_.end()) return;
    // Tail blocks first, so that on eviction a prefix's later blocks go before its head.
    for (auto b_it = it->second.table.rbegin(); b_it != it->second.table.rend(); ++b_it) {
        const int32_t id = *b_it;
        Block& b = blocks_[static_cast<size_t>(id)];
        MOE_CHECK_GT(b.ref, 0);
        if (--b.ref > 0) continue;
        if (b.hash) {
            auto ix = index_.find(*b.hash);
            if (ix != index_.end() && ix->second == id) {
                lru_.push_back(id);
                b.lru_it = std::prev(lru_.end());
                b.in_lru = true;
                continue;
            }
            b.hash.reset();
        }
        free_.push_back(id);
    }
    seqs_.erase(it);
}

std::span<const int32_t> KvBlockManager::block_table(SeqId seq) const {
    auto it = seqs_.find(seq);
    if (it == seqs_.end()) return {};
    return it->second.table;
}

void KvBlockManager::note_event(const Sha256Digest& h, bool stored) {
    if (!record_events_) return;
    auto [it, inserted] = pending_events_.try_emplace(h, stored);
    // The opposite change of the same hash since the last take: the two cancel out.
    if (!inserted && it->second != stored) pending_events_.erase(it);
}

void KvBlockManager::set_record_events(bool on) {
    record_events_ = on;
    if (!on) pending_events_.clear();
}

KvBlockManager::Events KvBlockManager::take_events() {
    Events e;
    for (const auto& [h, stored] : pending_events_) (stored ? e.stored : e.evicted).push_back(h);
    pending_events_.clear();
    return e;
}

std::vector<Sha256Digest> KvBlockManager::cached_hashes() const {
    std::vector<Sha256Digest> out;
    out.reserve(index_.size());
    for (const auto& [h, id] : index_) out.push_back(h);
    return out;
}

std::span<const Sha256Digest> KvBlockManager::block_hashes(SeqId seq) const {
    auto it = seqs_.find(seq);
    if (it == seqs_.end()) return {};
    return it->second.hashes;
}

bool KvBlockManager::is_cached(int32_t block) const {
    const Block& b = blocks_[static_cast<size_t>(block)];
    if (!b.hash) return false;
    auto it = index_.find(*b.hash);
    return it != index_.end() && it->second == block;
}

bool KvBlockManager::check_invariants(std::string* why) const {
    auto fail = [&](std::string msg) {
        *why = std::move(msg);
        return false;
    };
    const size_t n = blocks_.size();
    std::vector<int32_t> refs(n, 0);
    for (const auto& [seq, sb] : seqs_) {
        std::vector<char> seen(n, 0);
        for (int32_t b : sb.table) {
            if (b < 0 || static_cast<size_t>(b) >= n)
                return fail("seq " + std::to_string(seq) + " holds block id " + std::to_string(b));
            if (seen[static_cast<size_t>(b)]++)
                return fail("block " + std::to_string(b) + " twice in seq " + std::to_string(seq));
            ++refs[static_cast<size_t>(b)];
        }
        if (sb.hashes.size() > sb.table.size())
            return fail("seq " + std::to_string(seq) + " has more hashes than blocks");
    }
    std::vector<int> where(n, 0);
    for (int32_t b : free_) where[static_cast<size_t>(b)] += 1;
    for (int32_t b : lru_) where[static_cast<size_t>(b)] += 1;
    int64_t owned = 0;
    for (size_t b = 0; b < n; ++b) {
        const std::string name = "block " + std::to_string(b);
        const Block& blk = blocks_[b];
        if (refs[b] != blk.ref)
            return fail(name + " refcount " + std::to_string(blk.ref) + " but in " + std::to_string(refs[b]) +
                        " tables");
        if (blk.ref > 1 && !is_cached(static_cast<int32_t>(b)))
            return fail(name + " shared by " + std::to_string(blk.ref) + " tables but not in the prefix index");
        const int expected = blk.ref > 0 ? 0 : 1;
        if (where[b] != expected)
            return fail(name + " is on " + std::to_string(where[b]) + " free/LRU lists with refcount " +
                        std::to_string(blk.ref));
        if (blk.in_lru && blk.ref > 0) return fail(name + " owned and on the LRU list");
        if (blk.ref == 0 && blk.in_lru != is_cached(static_cast<int32_t>(b)))
            return fail(name + (blk.in_lru ? " on the LRU list but not cached"
                                           : " cached and unowned but not on the LRU list"));
        if (blk.ref > 0) ++owned;
    }
    if (num_free_blocks() + owned != num_total_blocks())
        return fail("free " + std::to_string(num_free_blocks()) + " + owned " + std::to_string(owned) + " != total " +
                    std::to_string(num_total_blocks()));
    for (const auto& [h, b] : index_)
        if (!blocks_[static_cast<size_t>(b)].hash || *blocks_[static_cast<size_t>(b)].hash != h)
            return fail("index points at block " + std::to_string(b) + " which does not hold that hash");
    return true;
}

}  // namespace moe
