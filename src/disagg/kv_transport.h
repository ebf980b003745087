// KvTransport: how a handoff's KV blocks move from a prefill worker's cache to a decode
// worker's (disaggregated serving, docs/ARCHITECTURE.md "Disaggregated serving").
//
// The decode side PULLS: the prefill side describes where the blocks of a handoff live
// (describe(), sent in moe.v1.KvSource), the decode side copies the blocks its own prefix cache
// lacks into blocks it allocated (pull()) and then acknowledges (ReleaseHandoff, not here).
//
// A block of a KvCache is num_regions() regions of region_bytes() each, one per (layer, pool):
// GQA models 2 x layers (K, V), MLA models 1 x layers (the latent row). Region r of block b
// lives at region_base[r] + b * region_bytes on the source. Transfers are block by block after
// the prefill has completed; they do not overlap the prefill's compute layer by layer.
//
// Everything in a KvSourceDesc came from a peer: check_source() checks every count, length
// and id against the local pool and the source's announced pool before a byte moves, and each
// implementation checks what it can verify of the peer itself.
//
// Thread safety: describe() and pull() may be called from any thread, concurrently.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "model/kv_cache.h"
#include "moe/status.h"

namespace moe::disagg {

// The C++ form of moe.v1.KvSource.
struct KvSourceDesc {
    std::string transport;                 // "ucx", "inproc"
    std::string endpoint;                  // ucx: the worker address; inproc: the registry key
    std::vector<std::string> region_keys;  // ucx: one packed rkey per region; inproc: none
    std::vector<int32_t> block_ids;        // the source's blocks of the prompt, in order
    int64_t region_bytes = 0;
    int32_t regions_per_block = 0;
    std::vector<uint64_t> region_base;  // regions_per_block addresses (the source's)
    int64_t num_blocks = 0;             // blocks in the source's pool: every block id is below it
};

// Limits on what a peer may announce.
inline constexpr int64_t kMaxSourceBlocks = int64_t{1} << 31;
inline constexpr size_t kMaxRegionKeyBytes = 64 << 10;

class KvTransport {
public:
    virtual ~KvTransport() = default;
    virtual const char* name() const = 0;
    // Prefill side: where `block_ids` of this transport's cache can be pulled from. The blocks
    // must stay allocated (the engine's lease) until the peer acknowledges.
    virtual StatusOr<KvSourceDesc> describe(std::span<const int32_t> block_ids) const = 0;
    // Decode side: for each i, every region of the source's block source.block_ids[src_index[i]]
    // into this cache's block dst[i]. Checks `source` first (check_source); FAILED_PRECONDITION
    // or INVALID_ARGUMENT naming the field on a mismatch, UNAVAILABLE when the peer cannot be
    // reached, CANCELLED when `cancelled` turned true (checked between blocks).
    virtual Status pull(const KvSourceDesc& source, std::span<const int32_t> src_index, std::span<const int32_t> dst,
                        const std::atomic<bool>& cancelled) = 0;
};

// Every field of `source` against the local cache `local` and against itself: the transport's
// name, regions_per_block and region_bytes equal to the local ones, one base (and for ucx one
// key) per region, num_blocks in [1, 2^31] with every region's span not overflowing 64 bits,
// every block id in [0, num_blocks), src_index within block_ids, dst within the local pool and
// as many as src_index. The message names the field and both values.
Status check_source(const KvSourceDesc& source, const KvCache& local, std::string_view transport,
                    std::span<const int32_t> src_index, std::span<const int32_t> dst);

// The in-process transport (tests; two engines in one process): the cache is registered under
// `key` until the transport is destroyed; pull() copies with memcpy under the registration's
// lock, so a source that goes away mid-pull is UNAVAILABLE, never a dangling read. CPU caches
// only (FAILED_PRECONDITION otherwise).
StatusOr<std::unique_ptr<KvTransport>> make_inproc_transport(const KvCache& cache, std::string key);

// The UCX transport (ucp RMA get over ucp_mem_map'ed KV pools; shared memory or TCP on one
// machine): built when CMake finds UCX (MOE_UCX, cmake/MoeUcx.cmake). Without it,
// ucx_available() is false and make_ucx_transport returns UNIMPLEMENTED.
bool ucx_available();
StatusOr<std::unique_ptr<KvTransport>> make_ucx_transport(const KvCache& cache);

}  // namespace moe::disagg
