#include "router/routing_policy.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "engine/kv_block_manager.h"

namespace moe::router {
namespace {

bool excluded(std::span<const int> exclude, int i) {
    return std::find(exclude.begin(), exclude.end(), i) != exclude.end();
}

}  // namespace

int pick_prefill(std::span<const WorkerState> workers, const PrefillChoiceInput& in, std::span<const int> exclude) {
    const int64_t per_request =
        std::max<int64_t>(1, in.load_blocks_per_request > 0 ? in.load_blocks_per_request : in.prompt_blocks);
    int best = -1;
    int64_t best_cost = std::numeric_limits<int64_t>::max();
    for (int i = 0; i < static_cast<int>(workers.size()); ++i) {
        const WorkerState& w = workers[static_cast<size_t>(i)];
        if (!w.healthy || excluded(exclude, i)) continue;
        const int64_t cached = std::clamp<int64_t>(w.cached_prefix_blocks, 0, in.prompt_blocks);
        const int64_t cost = (in.prompt_blocks - cached) + per_request * (w.num_waiting + w.in_flight);
        const bool better = best < 0 || cost < best_cost ||
                            (cost == best_cost && w.kv_blocks_free > workers[static_cast<size_t>(best)].kv_blocks_free);
        if (better) {
            best = i;
            best_cost = cost;
        }
    }
    return best;
}

int pick_decode(std::span<const WorkerState> workers, int64_t blocks_per_request, std::span<const int> exclude) {
    int best = -1;
    int64_t best_room = 0, best_busy = 0;
    for (int i = 0; i < static_cast<int>(workers.size()); ++i) {
        const WorkerState& w = workers[static_cast<size_t>(i)];
        if (!w.healthy || excluded(exclude, i)) continue;
        const int64_t room = w.kv_blocks_free - w.in_flight * std::max<int64_t>(blocks_per_request, 0);
        const int64_t busy = w.num_running + w.in_flight;
        if (best < 0 || room > best_room || (room == best_room && busy < best_busy)) {
            best = i;
            best_room = room;
            best_busy = busy;
        }
    }
    return best;
}

std::vector<Sha256Digest> prompt_block_hashes(std::span<const int32_t> tokens, int64_t block_size,
                                              const std::string& salt) {
    std::vector<Sha256Digest> out;
    if (block_size < 1) return out;
    const size_t bs = static_cast<size_t>(block_size);
    for (size_t start = 0; start + bs <= tokens.size(); start += bs)
        out.push_back(KvBlockManager::chain_hash(out.empty() ? nullptr : &out.back(), tokens.subspan(start, bs), salt));
    return out;
}

size_t DigestHasher::operator()(const Sha256Digest& d) const {
    size_t h;
    std::memcpy(&h, d.data(), sizeof(h));
    return h;
}

int64_t leading_cached_blocks(std::span<const Sha256Digest> hashes, const HashSet& cached) {
    int64_t n = 0;
    for (const Sha256Digest& h : hashes) {
        if (!cached.count(h)) break;
        ++n;
    }
    return n;
}

}  // namespace moe::router
