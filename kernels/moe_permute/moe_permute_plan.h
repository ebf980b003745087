// Host-side plan of the deterministic MoE permutation (a counting sort keyed by expert), and a host
// model of the exact row assignment the device computes, so that the layout is tested on the CPU.
//
// The pairs p = t * top_k + j are cut into chunks of kPermuteChunk (one CTA each, 8 warps of 32).
// counts[e * num_chunks + c] = pairs of chunk c routed to e; its exclusive scan base[e][c] is where
// chunk c's rows of expert e start, because the scan runs expert-major then chunk. Inside a chunk,
// a pair's row adds the counts of e in earlier warps and its rank among earlier lanes of its warp
// with the same e. Rows therefore follow (expert, p) order: stable, and independent of timing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace moe::kernels {

inline constexpr int kPermuteChunk = 256;
inline constexpr int kPermuteWarps = kPermuteChunk / 32;
// Per-warp expert counts live in shared memory: 8 warps x E x 4 bytes <= 32 KiB.
inline constexpr int64_t kPermuteMaxExperts = 1024;

struct PermutePlan {
    int64_t num_pairs = 0;
    int64_t num_experts = 0;
    int64_t num_chunks = 0;  // >= 1
    int64_t counts_len = 0;  // num_experts * num_chunks
    size_t smem_bytes = 0;   // per CTA of the count and scatter kernels
};

inline bool permute_supported(int64_t num_experts) {
    return num_experts >= 1 && num_experts <= kPermuteMaxExperts;
}

inline PermutePlan plan_moe_permute(int64_t num_pairs, int64_t num_experts) {
    PermutePlan p;
    p.num_pairs = num_pairs;
    p.num_experts = num_experts;
    p.num_chunks = num_pairs == 0 ? 1 : (num_pairs + kPermuteChunk - 1) / kPermuteChunk;
    p.counts_len = num_experts * p.num_chunks;
    p.smem_bytes = static_cast<size_t>(kPermuteWarps * num_experts) * sizeof(int32_t);
    return p;
}

// The device algorithm step by step on the host: row_of (num_pairs) and offsets (E + 1). ids must be
// in [0, E). Used by the CPU tests to pin the layout down against a plain stable sort.
inline void moe_permute_rows_host(const int32_t* ids, const PermutePlan& plan, std::vector<int32_t>* row_of,
                                  std::vector<int32_t>* offsets) {
    const int64_t E = plan.num_experts, C = plan.num_chunks, P = plan.num_pairs;
    std::vector<int32_t> counts(static_cast<size_t>(plan.counts_len), 0);
    for (int64_t p = 0; p < P; ++p) ++counts[static_cast<size_t>(ids[p] * C + p / kPermuteChunk)];
    std::vector<int32_t> base(counts.size(), 0);
    int32_t run = 0;
    for (size_t i = 0; i < counts.size(); ++i) {
        base[i] = run;
        run += counts[i];
    }
    row_of->assign(static_cast<size_t>(P), -1);
    for (int64_t c = 0; c < C; ++c) {
        // warp_count[w][e] for this chunk, then its exclusive prefix over the warps.
        std::vector<int32_t> warp_base(static_cast<size_t>(kPermuteWarps * E), 0);
        for (int64_t p = c * kPermuteChunk; p < std::min(P, (c + 1) * kPermuteChunk); ++p)
            ++warp_base[static_cast<size_t>((p % kPermuteChunk) / 32 * E + ids[p])];
        for (int64_t e = 0; e < E; ++e) {
            int32_t r = 0;
            for (int w = 0; w < kPermuteWarps; ++w) {
                const int32_t n = warp_base[static_cast<size_t>(w * E + e)];
                warp_base[static_cast<size_t>(w * E + e)] = r;
                r += n;
            }
        }
        for (int64_t p = c * kPermuteChunk; p < std::min(P, (c + 1) * kPermuteChunk); ++p) {
            const int64_t warp_first = p / 32 * 32;
            int32_t rank = 0;
            for (int64_t q = warp_first; q < p; ++q) rank += ids[q] == ids[p];
            const int64_t w = (p % kPermuteChunk) / 32;
            (*row_of)[static_cast<size_t>(p)] =
                base[static_cast<size_t>(ids[p] * C + c)] + warp_base[static_cast<size_t>(w * E + ids[p])] + rank;
        }
    }
    offsets->assign(static_cast<size_t>(E + 1), 0);
    for (int64_t e = 0; e < E; ++e) (*offsets)[static_cast<size_t>(e)] = base[static_cast<size_t>(e * C)];
    (*offsets)[static_cast<size_t>(E)] = run;
}

}  // namespace moe::kernels
