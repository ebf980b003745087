// Paged attention, flash style with an online softmax, on CUDA cores in f32.
//
// A CTA owns one row tile of one sequence and one KV head: R = 4 warps x RPW rows, where the rows
// of a sequence are its (query token, q head of the KV head's group) pairs in token-major order, so
// that one K/V tile in shared memory serves every q head of the group (GQA). For each tile of 32
// keys, lane j scores key j against each of the warp's rows, the warp updates the row's running max
// and sum, and each lane accumulates head_dim/32 output dims in registers. Keys are read through
// the block table, f32 or bf16, converted to f32 in shared memory.
//
// Decode splits the key span into gridDim.z chunks; each split writes (acc, max, sum) partials and
// attention_combine_kernel merges them in split order (deterministic).
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "kernels/attention/attention.h"
#include "kernels/common/device_utils.cuh"

namespace moe::kernels {

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

// The checks of check_attention_data, once per launch (CTA 0): query_start and kv_lens. Block
// ids are checked where they are read.
__device__ inline void attention_check_metadata(const AttentionParams& p, KernelError* err) {
    if (threadIdx.x == 0) {
        if (p.query_start[0] != 0) report_bad_row(err, 0);
        if (p.query_start[p.num_seqs] != p.num_tokens) report_bad_row(err, p.num_seqs);
    }
    const int64_t cap = p.max_blocks_per_seq * p.block_size;
    for (int64_t s = threadIdx.x; s < p.num_seqs; s += blockDim.x) {
        const int64_t q_len = static_cast<int64_t>(p.query_start[s + 1]) - p.query_start[s];
        const int64_t kv_len = p.kv_lens[s];
        if (q_len < 0 || kv_len < q_len || kv_len > cap) report_bad_row(err, s);
    }
}

template <int HD, int RPW, typename CacheT>
__global__ void __launch_bounds__(kAttnWarps * 32)
    attention_kernel(const AttentionParams p, const int num_splits, KernelError* err) {
    constexpr int R = kAttnWarps * RPW;
    constexpr int KT = kAttnKeyTile;
    constexpr int DPL = HD / 32;  // output dims per lane
    extern __shared__ float smem[];
    float* q_s = smem;                 // [R][HD], pre-scaled
    float* k_s = q_s + R * HD;         // [KT][HD + 1]: lane j reads row j, the pad spreads the banks
    float* v_s = k_s + KT * (HD + 1);  // [KT][HD]
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int64_t kvh = blockIdx.y;
    const int split = blockIdx.z;
    const int64_t group = p.num_q_heads / p.num_kv_heads;
    const auto* k_cache = static_cast<const CacheT*>(p.k_cache);
    const auto* v_cache = static_cast<const CacheT*>(p.v_cache);

    if (blockIdx.x == 0 && blockIdx.y == 0 && blockIdx.z == 0) attention_check_metadata(p, err);

    // Which sequence and tile: walk the sequences' tile counts (S is small next to the work).
    int64_t tile = blockIdx.x;
    int64_t s = 0;
    int64_t q0 = 0, q_len = 0;
    for (; s < p.num_seqs; ++s) {
        q0 = p.query_start[s];
        q_len = max(static_cast<int64_t>(p.query_start[s + 1]) - q0, int64_t{0});
        const int64_t tiles = (q_len * group + R - 1) / R;
        if (tile < tiles) break;
        tile -= tiles;
    }
    if (s >= p.num_seqs) return;
    const int64_t kv_len = p.kv_lens[s];
    // Bad metadata (reported above): never index with it.
    if (q0 < 0 || q0 + q_len > p.num_tokens || kv_len < q_len || kv_len > p.max_blocks_per_seq * p.block_size) return;

    const int64_t rows_in_seq = q_len * group;
    const int64_t row0 = tile * R;
    const int64_t first_pos = kv_len - q_len + row0 / group;
    const int64_t last_pos = kv_len - q_len + (min(row0 + R, rows_in_seq) - 1) / group;
    const int64_t key_lo = p.sliding_window > 0 ? max(int64_t{0}, first_pos - p.sliding_window + 1) : 0;
    int64_t k_begin, k_end;
    {
        const int64_t span = last_pos + 1 - key_lo;
        const int64_t per = (span + num_splits - 1) / num_splits;
        const int64_t chunk = (per + KT - 1) / KT * KT;
        k_begin = min(last_pos + 1, key_lo + split * chunk);
        k_end = min(last_pos + 1, k_begin + chunk);
    }

    for (int i = threadIdx.x; i < R * HD; i += blockDim.x) {
        const int r = i / HD;
        const int d = i - r * HD;
        const int64_t g = row0 + r;
        float v = 0.0f;
        if (g < rows_in_seq && d < p.head_dim) {
            const int64_t t = q0 + g / group;
            const int64_t h = kvh * group + g % group;
            v = p.q[(t * p.num_q_heads + h) * p.head_dim + d] * p.scale;
        }
        q_s[i] = v;
    }

    float m[RPW], l[RPW], acc[RPW][DPL];
#pragma unroll
    for (int i = 0; i < RPW; ++i) {
        m[i] = -INFINITY;
        l[i] = 0.0f;
#pragma unroll
        for (int j = 0; j < DPL; ++j) acc[i][j] = 0.0f;
    }

    for (int64_t kb = k_begin; kb < k_end; kb += KT) {
        __syncthreads();  // q_s written / previous tile consumed
        for (int i = threadIdx.x; i < KT * HD; i += blockDim.x) {
            const int kk = i / HD;
            const int d = i - kk * HD;
            const int64_t c = kb + kk;
            float kv = 0.0f, vv = 0.0f;
            if (c < k_end && d < p.head_dim) {
                const int32_t block = p.block_tables[s * p.max_blocks_per_seq + c / p.block_size];
                if (block >= 0 && block < p.num_blocks) {
                    const int64_t off =
                        ((static_cast<int64_t>(block) * p.block_size + c % p.block_size) * p.num_kv_heads + kvh) *
                            p.head_dim +
                        d;
                    kv = load_as_f32(k_cache, off);
                    vv = load_as_f32(v_cache, off);
                } else if (d == 0) {
                    report_bad_row(err, s);
                }
            }
            k_s[kk * (HD + 1) + d] = kv;
            v_s[kk * HD + d] = vv;
        }
        __syncthreads();
#pragma unroll
        for (int i = 0; i < RPW; ++i) {
            const int r = warp * RPW + i;
            const int64_t g = row0 + r;
            if (g >= rows_in_seq) continue;  // warp-uniform
            const int64_t pos = kv_len - q_len + g / group;
            const int64_t lo = p.sliding_window > 0 ? max(int64_t{0}, pos - p.sliding_window + 1) : 0;
            const int64_t c = kb + lane;
            float score = -INFINITY;
            if (c >= lo && c <= pos && c < k_end) {
                const float* qr = q_s + r * HD;
                const float* kr = k_s + lane * (HD + 1);
                float dot = 0.0f;
#pragma unroll 8
                for (int d = 0; d < HD; ++d) dot = fmaf(qr[d], kr[d], dot);
                score = dot;
            }
            const float tile_max = warp_max(score);
            if (tile_max == -INFINITY) continue;  // no visible key in this tile for this row
            const float m_new = fmaxf(m[i], tile_max);
            const float corr = expf(m[i] - m_new);  // 0 on the first visible tile (m = -inf)
            const float prob = score == -INFINITY ? 0.0f : expf(score - m_new);
            l[i] = l[i] * corr + warp_sum(prob);
            m[i] = m_new;
#pragma unroll
            for (int j = 0; j < DPL; ++j) acc[i][j] *= corr;
#pragma unroll 4
            for (int kk = 0; kk < KT; ++kk) {
                const float pk = __shfl_sync(0xffffffffu, prob, kk);
#pragma unroll
                for (int j = 0; j < DPL; ++j) acc[i][j] = fmaf(pk, v_s[kk * HD + lane + 32 * j], acc[i][j]);
            }
        }
    }

#pragma unroll
    for (int i = 0; i < RPW; ++i) {
        const int64_t g = row0 + warp * RPW + i;
        if (g >= rows_in_seq) continue;
        const int64_t t = q0 + g / group;
        const int64_t h = kvh * group + g % group;
        const int64_t row = t * p.num_q_heads + h;
        if (num_splits == 1) {
            float* o = p.out + row * p.head_dim;
            // A sink adds exp(sinks[h]) to the denominator (no value): rescale to the larger max.
            float f = 1.0f, den = l[i];
            if (p.sinks != nullptr) {
                const float sk = p.sinks[h];
                const float big = fmaxf(m[i], sk);
                f = expf(m[i] - big);
                den = l[i] * f + expf(sk - big);
            }
#pragma unroll
            for (int j = 0; j < DPL; ++j) {
                const int d = lane + 32 * j;
                if (d < p.head_dim) o[d] = den > 0.0f ? acc[i][j] * f / den : 0.0f;
            }
        } else {
            const int64_t pr = row * num_splits + split;
            float* o = p.partials + pr * p.head_dim;
#pragma unroll
            for (int j = 0; j < DPL; ++j) {
                const int d = lane + 32 * j;
                if (d < p.head_dim) o[d] = acc[i][j];
            }
            if (lane == 0) {
                float* ml = p.partials + p.num_tokens * p.num_q_heads * num_splits * p.head_dim + pr * 2;
                ml[0] = m[i];
                ml[1] = l[i];
            }
        }
    }
}

// out[row] = sum_z e^(m_z - M) acc_z / sum_z e^(m_z - M) l_z over the splits z in order, with M the
// largest m_z. One CTA per (token, q head) row (grid-stride), threads over head_dim.
// With sinks (one per q head, rows are (token, head) pairs), exp(sinks[h] - M) joins the denominator.
__global__ void attention_combine_kernel(const float* __restrict__ partials, float* __restrict__ out, int64_t rows,
                                         int64_t head_dim, int num_splits, const float* __restrict__ sinks,
                                         int64_t num_q_heads) {
    const float* ml_all = partials + rows * num_splits * head_dim;
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* ml = ml_all + row * num_splits * 2;
        float big = -INFINITY;
        for (int z = 0; z < num_splits; ++z) big = fmaxf(big, ml[2 * z]);
        const float sk = sinks != nullptr ? sinks[row % num_q_heads] : -INFINITY;
        big = fmaxf(big, sk);
        float denom = sinks != nullptr ? expf(sk - big) : 0.0f;
        for (int z = 0; z < num_splits; ++z)
            if (ml[2 * z] != -INFINITY) denom += expf(ml[2 * z] - big) * ml[2 * z + 1];
        for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
            float num = 0.0f;
            for (int z = 0; z < num_splits; ++z)
                if (ml[2 * z] != -INFINITY)
                    num += expf(ml[2 * z] - big) * partials[(row * num_splits + z) * head_dim + d];
            out[row * head_dim + d] = denom > 0.0f ? num / denom : 0.0f;
        }
    }
}

}  // namespace moe::kernels
