// Host-side plan of the paged attention kernel: which template instance, how many CTAs along
// each grid axis, how many KV splits, how much shared and scratch memory. CUDA-free so that it
// is unit-tested on the CPU (tests/unit/cuda_plan_test.cc).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace moe::kernels {

inline constexpr int kAttnWarps = 4;
inline constexpr int kAttnKeyTile = 32;    // keys per shared-memory tile: one per lane
inline constexpr int kAttnMaxSplits = 16;  // partials per row the combine pass reads
// A split shorter than this does not pay for its partial write and the combine read.
inline constexpr int64_t kAttnMinKeysPerSplit = 256;

struct AttentionPlan {
    int head_dim_bucket = 0;  // template head size (32/64/128/256) >= head_dim; 0: unsupported
    int rows_per_warp = 0;    // (token, q head) rows per warp: 2 for decode, 4 for prefill
    int rows_per_cta = 0;
    int64_t grid_x = 0;         // row tiles: an upper bound, CTAs past the last tile exit
    int64_t grid_y = 0;         // KV heads
    int num_splits = 1;         // grid z; > 1 adds the combine pass
    size_t smem_bytes = 0;      // dynamic shared memory per CTA
    size_t partial_floats = 0;  // scratch for split partials: acc then (max, sum) per row and split
};

inline int attention_head_dim_bucket(int64_t head_dim) {
    for (int b : {32, 64, 128, 256})
        if (head_dim <= b) return b;
    return 0;
}

// Splits along the KV length: enough CTAs for two waves of `num_sms`, but never a split shorter
// than kAttnMinKeysPerSplit keys of the longest possible sequence.
inline int attention_num_splits(int64_t ctas_without_split, int64_t max_kv_len, int num_sms) {
    const int64_t target = 2 * static_cast<int64_t>(std::max(num_sms, 1));
    if (ctas_without_split >= target) return 1;
    const int64_t want = (target + ctas_without_split - 1) / std::max<int64_t>(ctas_without_split, 1);
    const int64_t by_length = std::max<int64_t>(max_kv_len / kAttnMinKeysPerSplit, 1);
    return static_cast<int>(std::clamp<int64_t>(std::min(want, by_length), 1, kAttnMaxSplits));
}

// num_tokens T and num_seqs S are the host-known sizes; max_kv_len is the cache capacity of one
// sequence (max_blocks_per_seq * block_size): the real lengths live on the device and are not
// read back. A batch with T == S (every sequence one new token, in practice) is planned as
// decode: small row tiles and KV splits; anything else as prefill: bigger tiles, no split.
inline AttentionPlan plan_attention(int64_t num_tokens, int64_t num_seqs, int64_t num_q_heads, int64_t num_kv_heads,
                                    int64_t head_dim, int64_t max_kv_len, int num_sms) {
    AttentionPlan p;
    p.head_dim_bucket = attention_head_dim_bucket(head_dim);
    if (p.head_dim_bucket == 0 || num_kv_heads <= 0 || num_q_heads % num_kv_heads != 0) return p;
    const int64_t group = num_q_heads / num_kv_heads;
    const bool decode = num_tokens == num_seqs;
    p.rows_per_warp = decode ? 2 : 4;
    p.rows_per_cta = p.rows_per_warp * kAttnWarps;
    // Sequence s needs ceil(q_len_s * group / R) tiles; summed over s that is at most
    // (T * group + S * (R - 1)) / R.
    p.grid_x = std::max<int64_t>((num_tokens * group + num_seqs * (p.rows_per_cta - 1)) / p.rows_per_cta, 1);
    p.grid_y = num_kv_heads;
    p.num_splits = decode ? attention_num_splits(p.grid_x * p.grid_y, max_kv_len, num_sms) : 1;
    const size_t hd = static_cast<size_t>(p.head_dim_bucket);
    p.smem_bytes =
        (static_cast<size_t>(p.rows_per_cta) * hd + kAttnKeyTile * (hd + 1) + kAttnKeyTile * hd) * sizeof(float);
    if (p.num_splits > 1) {
        const size_t rows = static_cast<size_t>(num_tokens * num_q_heads) * static_cast<size_t>(p.num_splits);
        p.partial_floats = rows * static_cast<size_t>(head_dim) + rows * 2;
    }
    return p;
}

// The keys [begin, end) that split `split` of `num_splits` covers out of a CTA's key span
// [lo, hi): equal chunks rounded up to whole key tiles; trailing splits may be empty.
inline void attention_split_range(int64_t lo, int64_t hi, int split, int num_splits, int64_t* begin, int64_t* end) {
    const int64_t span = std::max<int64_t>(hi - lo, 0);
    const int64_t per = (span + num_splits - 1) / num_splits;
    const int64_t chunk = (per + kAttnKeyTile - 1) / kAttnKeyTile * kAttnKeyTile;
    *begin = std::min(hi, lo + split * chunk);
    *end = std::min(hi, *begin + chunk);
}

}  // namespace moe::kernels
