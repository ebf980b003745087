// The KV-aware router's choice of workers: pure functions of what the router knows about each
// worker (no I/O, no clocks), so that every rule is unit-tested (tests/router/routing_policy_test.cc).
//
// Prefill worker: the one with the least work ahead of this request, in KV blocks:
//     cost = uncached prompt blocks  (prompt blocks minus the leading blocks its prefix cache holds)
//          + load_blocks_per_request * (its waiting requests + the router's requests in flight there)
// so a worker holding the prompt's prefix wins unless it is queued more than the saving.
// Ties: more free KV blocks, then the lower index (the order given on the command line).
//
// Decode worker: the most KV headroom: free blocks minus the blocks of the router's requests in
// flight there that its load report may not show yet (in_flight * blocks_per_request). Ties:
// fewer running + in-flight requests, then the lower index. A worker without room for this
// request is still chosen when no worker has room (it queues the request rather than the router
// failing it).
//
// Unhealthy workers (event stream down) and excluded ones (a failed first attempt) are never
// chosen; -1 when none is left.
#pragma once

#include <cstdint>
#include <span>
#include <unordered_set>
#include <vector>

#include "core/sha256.h"

namespace moe::router {

struct WorkerState {
    bool healthy = true;
    int64_t cached_prefix_blocks = 0;  // leading blocks of this request its prefix cache holds
    int64_t kv_blocks_free = 0;
    int64_t kv_blocks_total = 0;
    int64_t num_running = 0;
    int64_t num_waiting = 0;
    int64_t in_flight = 0;  // requests the router sent there that have not ended
};

struct PrefillChoiceInput {
    int64_t prompt_blocks = 0;  // full blocks of the prompt (the ones a prefix cache can hold)
    // The cost of one queued request, in blocks; <= 0: prompt_blocks (one prompt's worth), at
    // least 1.
    int64_t load_blocks_per_request = 0;
};

int pick_prefill(std::span<const WorkerState> workers, const PrefillChoiceInput& in, std::span<const int> exclude = {});

// blocks_per_request: the KV blocks this request will hold (prompt + max tokens).
int pick_decode(std::span<const WorkerState> workers, int64_t blocks_per_request, std::span<const int> exclude = {});

// The chained prefix hashes of the prompt's FULL blocks, as KvBlockManager indexes them
// (SHA-256 of parent hash, token ids as int32 little-endian, salt).
std::vector<Sha256Digest> prompt_block_hashes(std::span<const int32_t> tokens, int64_t block_size,
                                              const std::string& salt);

struct DigestHasher {
    size_t operator()(const Sha256Digest& d) const;
};
using HashSet = std::unordered_set<Sha256Digest, DigestHasher>;

// How many of `hashes`, from the first, `cached` holds (a chain: the first miss ends it).
int64_t leading_cached_blocks(std::span<const Sha256Digest> hashes, const HashSet& cached);

}  // namespace moe::router
