#include "disagg/kv_transport.h"

#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <shared_mutex>

namespace moe::disagg {

Status check_source(const KvSourceDesc& s, const KvCache& local, std::string_view transport,
                    std::span<const int32_t> src_index, std::span<const int32_t> dst) {
    auto n = [](auto v) { return std::to_string(v); };
    if (s.transport != transport)
        return failed_precondition("kv.transport is \"" + s.transport.substr(0, 32) + "\", this worker pulls with \"" +
                                   std::string(transport) + "\"");
    if (s.regions_per_block != local.num_regions())
        return failed_precondition("kv.regions_per_block is " + n(s.regions_per_block) + ", this worker's cache has " +
                                   n(local.num_regions()) + " regions per block");
    if (s.region_bytes != local.region_bytes())
        return failed_precondition("kv.region_bytes is " + n(s.region_bytes) + ", this worker's cache has " +
                                   n(local.region_bytes()) + " bytes per block per region");
    if (s.region_base.size() != static_cast<size_t>(s.regions_per_block))
        return invalid_argument("kv.region_base has " + n(s.region_base.size()) + " entries for " +
                                n(s.regions_per_block) + " regions");
    if (s.num_blocks < 1 || s.num_blocks > kMaxSourceBlocks)
        return invalid_argument("kv.num_blocks is " + n(s.num_blocks) + ", must be in [1, 2^31]");
    const uint64_t span = static_cast<uint64_t>(s.num_blocks) * static_cast<uint64_t>(s.region_bytes);
    for (size_t r = 0; r < s.region_base.size(); ++r)
        if (s.region_base[r] == 0 || s.region_base[r] > std::numeric_limits<uint64_t>::max() - span)
            return invalid_argument("kv.region_base[" + n(r) + "] is " + n(s.region_base[r]) + ": null, or " + n(span) +
                                    " bytes from it overflow 64 bits");
    for (size_t i = 0; i < s.block_ids.size(); ++i)
        if (s.block_ids[i] < 0 || s.block_ids[i] >= s.num_blocks)
            return invalid_argument("kv.block_ids[" + n(i) + "] is " + n(s.block_ids[i]) + ", outside the source's " +
                                    n(s.num_blocks) + " blocks");
    if (src_index.size() != dst.size())
        return invalid_argument(n(src_index.size()) + " source blocks for " + n(dst.size()) + " destination blocks");
    for (size_t i = 0; i < src_index.size(); ++i) {
        if (src_index[i] < 0 || static_cast<size_t>(src_index[i]) >= s.block_ids.size())
            return invalid_argument("source block index " + n(src_index[i]) + " is outside kv.block_ids (" +
                                    n(s.block_ids.size()) + " blocks)");
        if (dst[i] < 0 || dst[i] >= local.num_blocks())
            return invalid_argument("destination block " + n(dst[i]) + " is outside this worker's " +
                                    n(local.num_blocks()) + " blocks");
    }
    return ok_status();
}

// ---- the in-process transport -----------------------------------------------------------------

namespace {

struct InprocPool {
    std::shared_mutex mu;  // shared: a pull reading; unique: the owner going away
    bool alive = true;
    std::vector<uint64_t> bases;
    int64_t region_bytes = 0;
    int64_t num_blocks = 0;
};

std::mutex& registry_mu() {
    static std::mutex mu;
    return mu;
}
std::map<std::string, std::shared_ptr<InprocPool>>& registry() {
    static std::map<std::string, std::shared_ptr<InprocPool>> r;
    return r;
}

class InprocTransport final : public KvTransport {
public:
    InprocTransport(const KvCache& cache, std::string key, std::shared_ptr<InprocPool> pool)
        : cache_(cache), key_(std::move(key)), pool_(std::move(pool)) {}
    ~InprocTransport() override {
        {
            std::lock_guard<std::mutex> lock(registry_mu());
            registry().erase(key_);
        }
        std::unique_lock<std::shared_mutex> lock(pool_->mu);  // waits for pulls reading it
        pool_->alive = false;
    }
    const char* name() const override { return "inproc"; }

    StatusOr<KvSourceDesc> describe(std::span<const int32_t> block_ids) const override {
        KvSourceDesc d;
        d.transport = name();
        d.endpoint = key_;
        d.block_ids.assign(block_ids.begin(), block_ids.end());
        d.region_bytes = pool_->region_bytes;
        d.regions_per_block = static_cast<int32_t>(pool_->bases.size());
        d.region_base = pool_->bases;
        d.num_blocks = pool_->num_blocks;
        return d;
    }

    Status pull(const KvSourceDesc& s, std::span<const int32_t> src_index, std::span<const int32_t> dst,
                const std::atomic<bool>& cancelled) override {
        MOE_RETURN_IF_ERROR(check_source(s, cache_, name(), src_index, dst));
        std::shared_ptr<InprocPool> peer;
        {
            std::lock_guard<std::mutex> lock(registry_mu());
            auto it = registry().find(s.endpoint);
            if (it == registry().end())
                return unavailable("inproc KV source \"" + s.endpoint.substr(0, 64) + "\" is not registered");
            peer = it->second;
        }
        std::shared_lock<std::shared_mutex> lock(peer->mu);
        if (!peer->alive) return unavailable("inproc KV source went away");
        // In one process the registry is the truth: the descriptor must name the pool as it is.
        if (s.num_blocks != peer->num_blocks)
            return invalid_argument("kv.num_blocks is " + std::to_string(s.num_blocks) + ", the source pool has " +
                                    std::to_string(peer->num_blocks));
        if (s.region_base != peer->bases) return invalid_argument("kv.region_base does not name the source's pools");
        const size_t rb = static_cast<size_t>(s.region_bytes);
        for (size_t i = 0; i < src_index.size(); ++i) {
            if (cancelled.load()) return Status(StatusCode::kCancelled, "KV pull cancelled");
            const uint64_t src_block = static_cast<uint64_t>(s.block_ids[static_cast<size_t>(src_index[i])]);
            for (int64_t r = 0; r < cache_.num_regions(); ++r) {
                const auto* from =
                    reinterpret_cast<const uint8_t*>(peer->bases[static_cast<size_t>(r)]) + src_block * rb;
                auto* to = static_cast<uint8_t*>(cache_.region_base(r)) + static_cast<size_t>(dst[i]) * rb;
                std::memcpy(to, from, rb);
            }
        }
        return ok_status();
    }

private:
    const KvCache& cache_;
    std::string key_;
    std::shared_ptr<InprocPool> pool_;
};

}  // namespace

StatusOr<std::unique_ptr<KvTransport>> make_inproc_transport(const KvCache& cache, std::string key) {
    if (cache.device().kind != DeviceKind::kCpu)
        return failed_precondition("the inproc KV transport copies host memory; this cache is on " +
                                   cache.device().to_string());
    auto pool = std::make_shared<InprocPool>();
    for (int64_t r = 0; r < cache.num_regions(); ++r)
        pool->bases.push_back(reinterpret_cast<uint64_t>(cache.region_base(r)));
    pool->region_bytes = cache.region_bytes();
    pool->num_blocks = cache.num_blocks();
    {
        std::lock_guard<std::mutex> lock(registry_mu());
        if (registry().count(key)) return invalid_argument("inproc KV source \"" + key + "\" is already registered");
        registry()[key] = pool;
    }
    return std::unique_ptr<KvTransport>(new InprocTransport(cache, std::move(key), std::move(pool)));
}

}  // namespace moe::disagg
