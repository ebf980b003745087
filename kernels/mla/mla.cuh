// Device code of the MLA ops and the grouped router (kernels/mla/mla.h). Plain CUDA-core kernels
// with f32 arithmetic, written for correctness against the reference first:
//   - element ops (rope_table, latent_write/gather, mla_expand): grid-stride, memory-bound;
//   - attention (ragged, and over the paged latent): one block of 128 threads per (query row,
//     head), keys scored 128 at a time (one per thread) with an online softmax; each thread owns
//     up to 8 output dims and accumulates every key's value row in key order (deterministic);
//   - head_gemm: one thread per output column, 8 tokens per block, f32 sums in k order;
//   - grouped router: one warp per token, the token's scores in shared memory.
// Main kernels first read the error block: a bad index recorded by the check kernel queued
// before them means they write nothing.
#pragma once

#include <cuda_bf16.h>

#include <climits>
#include <cstdint>

#include "kernels/common/device_utils.cuh"
#include "kernels/mla/mla.h"

namespace moe::kernels {

__device__ __forceinline__ bool check_failed(const KernelError* err) {
    return err != nullptr && err->num_bad != 0;
}

template <typename T>
__global__ void check_index_range_kernel(const T* __restrict__ values, int64_t n, int64_t lo, int64_t hi,
                                         KernelError* err) {
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t v = static_cast<int64_t>(values[i]);
        if (v < lo || v >= hi) report_bad_row(err, i);
    }
}

__global__ void rope_table_kernel(float* __restrict__ x, int64_t ld, int64_t rows, int64_t half,
                                  const int32_t* __restrict__ positions, int64_t rows_per_token,
                                  const float* __restrict__ inv_freq, float attention_factor, bool interleaved,
                                  const KernelError* err) {
    if (check_failed(err)) return;
    const int64_t total = rows * half;
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t r = i / half, j = i % half;
        // As the CPU kernel and transformers: the angle in f32, cos and sin times the factor.
        const float angle = static_cast<float>(positions[r / rows_per_token]) * inv_freq[j];
        const float c = cosf(angle) * attention_factor, s = sinf(angle) * attention_factor;
        float* row = x + r * ld;
        const int64_t i0 = interleaved ? 2 * j : j, i1 = interleaved ? 2 * j + 1 : j + half;
        const float x0 = row[i0], x1 = row[i1];
        row[i0] = x0 * c - x1 * s;
        row[i1] = x1 * c + x0 * s;
    }
}

template <typename CacheT>
__global__ void latent_write_kernel(const float* __restrict__ rows, int64_t ld, const int64_t* __restrict__ slots,
                                    int64_t num_tokens, int64_t dim, CacheT* __restrict__ cache,
                                    const KernelError* err) {
    if (check_failed(err)) return;
    for (int64_t t = blockIdx.x; t < num_tokens; t += gridDim.x) {
        const int64_t slot = slots[t];
        if (slot < 0) continue;  // -1: skipped (anything else below 0 was recorded by the check)
        for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) store_from_f32(cache, slot * dim + d, rows[t * ld + d]);
    }
}

template <typename CacheT>
__global__ void latent_gather_kernel(const CacheT* __restrict__ cache, const int64_t* __restrict__ slots, int64_t n,
                                     int64_t dim, float* __restrict__ out, const KernelError* err) {
    if (check_failed(err)) return;
    for (int64_t r = blockIdx.x; r < n; r += gridDim.x) {
        const int64_t slot = slots[r];
        for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) out[r * dim + d] = load_as_f32(cache, slot * dim + d);
    }
}

__global__ void mla_expand_kernel(const float* __restrict__ kv, const float* __restrict__ k_rope, int64_t ld_rope,
                                  float* __restrict__ k, float* __restrict__ v, int64_t n, int64_t heads, int64_t nope,
                                  int64_t rope, int64_t dv) {
    const int64_t dk = nope + rope, dkv = nope + dv, per = dk + dv, total = n * heads * per;
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t nh = i / per, d = i % per, row = nh / heads;
        if (d < nope) {
            k[nh * dk + d] = kv[nh * dkv + d];
        } else if (d < dk) {
            k[nh * dk + d] = k_rope[row * ld_rope + (d - nope)];
        } else {
            v[nh * dv + (d - dk)] = kv[nh * dkv + nope + (d - dk)];
        }
    }
}

// The conditions of ops::check_ragged_attention_data, flagged (not worded: the host does that).
__global__ void check_ragged_meta_kernel(const int32_t* __restrict__ qs, const int32_t* __restrict__ ks,
                                         int64_t num_seqs, int64_t num_tokens, int64_t num_kv, KernelError* err) {
    if (threadIdx.x == 0 && (qs[0] != 0 || ks[0] != 0 || qs[num_seqs] != num_tokens || ks[num_seqs] != num_kv))
        report_bad_row(err, 0);
    for (int64_t s = threadIdx.x; s < num_seqs; s += blockDim.x) {
        const int64_t q_len = int64_t{qs[s + 1]} - qs[s], kv_len = int64_t{ks[s + 1]} - ks[s];
        if (q_len < 0 || kv_len < 0 || kv_len < q_len) report_bad_row(err, s);
    }
}

// The conditions of ops::check_attention_data without a sliding window (MLA has none).
__global__ void check_paged_meta_kernel(const int32_t* __restrict__ qs, const int32_t* __restrict__ kv_lens,
                                        const int32_t* __restrict__ tables, int64_t num_seqs, int64_t num_tokens,
                                        int64_t max_blocks, int64_t block_size, int64_t num_blocks, KernelError* err) {
    if (threadIdx.x == 0 && (qs[0] != 0 || qs[num_seqs] != num_tokens)) report_bad_row(err, 0);
    for (int64_t s = threadIdx.x; s < num_seqs; s += blockDim.x) {
        const int64_t q_len = int64_t{qs[s + 1]} - qs[s], kv_len = kv_lens[s];
        if (q_len < 0 || kv_len < q_len || kv_len > max_blocks * block_size) {
            report_bad_row(err, s);
            continue;
        }
        if (q_len == 0) continue;
        for (int64_t b = 0; b <= (kv_len - 1) / block_size; ++b) {
            const int32_t block = tables[s * max_blocks + b];
            if (block < 0 || block >= num_blocks) {
                report_bad_row(err, s);
                break;
            }
        }
    }
}

// Max over the block (every thread gets it); blockDim.x a multiple of 32; scratch: 32 floats.
__device__ __forceinline__ float block_max(float v, float* scratch) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, num_warps = blockDim.x / 32;
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float total = lane < num_warps ? scratch[lane] : -INFINITY;
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) total = fmaxf(total, __shfl_xor_sync(0xffffffffu, total, offset));
    __syncthreads();
    return total;
}

// The sequence s with query_start[s] <= t < query_start[s + 1] (metadata already checked).
__device__ __forceinline__ int64_t sequence_of(const int32_t* qs, int64_t num_seqs, int64_t t) {
    int64_t lo = 0, hi = num_seqs;  // the last s with qs[s] <= t lies in [lo, hi)
    while (hi - lo > 1) {
        const int64_t mid = (lo + hi) / 2;
        if (qs[mid] <= t) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return lo;
}

// softmax(scale * score(c)) . value(c, :) over keys c in [0, n), written to out[0, dv).
// Called by all kMlaThreads threads of the block.
template <typename Keys>
__device__ void attend_keys(const Keys& keys, int64_t n, int64_t dv, float scale, float* __restrict__ out) {
    __shared__ float weight[kMlaThreads];
    __shared__ float scratch[32];
    const int tid = threadIdx.x;
    float m = -INFINITY, l = 0.0f;
    float acc[kMlaMaxDimsPerThread];
#pragma unroll
    for (int j = 0; j < kMlaMaxDimsPerThread; ++j) acc[j] = 0.0f;
    for (int64_t c0 = 0; c0 < n; c0 += kMlaThreads) {
        const int64_t c = c0 + tid;
        const float s = c < n ? keys.score(c) * scale : -INFINITY;
        const float new_m = fmaxf(m, block_max(s, scratch));
        const float e = c < n ? expf(s - new_m) : 0.0f;
        weight[tid] = e;
        const float chunk_sum = block_sum(e, scratch);  // its barriers publish weight[]
        const float alpha = expf(m - new_m);            // 0 on the first chunk (m = -inf)
        l = l * alpha + chunk_sum;
        const int64_t chunk = n - c0 < kMlaThreads ? n - c0 : kMlaThreads;
#pragma unroll
        for (int j = 0; j < kMlaMaxDimsPerThread; ++j) acc[j] *= alpha;
        for (int64_t cc = 0; cc < chunk; ++cc) {
            const float w = weight[cc];
#pragma unroll
            for (int j = 0; j < kMlaMaxDimsPerThread; ++j) {
                const int64_t d = tid + int64_t{j} * kMlaThreads;
                if (d < dv) acc[j] += w * keys.value(c0 + cc, d);
            }
        }
        m = new_m;
        __syncthreads();  // weight[] is rewritten by the next chunk
    }
    const float inv = 1.0f / l;
#pragma unroll
    for (int j = 0; j < kMlaMaxDimsPerThread; ++j) {
        const int64_t d = tid + int64_t{j} * kMlaThreads;
        if (d < dv) out[d] = acc[j] * inv;
    }
}

struct RaggedKeys {
    const float* q;  // this row and head, [dqk]
    const float* k;  // key 0 of this sequence and head; key c at k + c * key_stride
    const float* v;
    int64_t key_stride, value_stride, dqk;
    __device__ float score(int64_t c) const {
        const float* kc = k + c * key_stride;
        float dot = 0.0f;
        for (int64_t d = 0; d < dqk; ++d) dot += q[d] * kc[d];
        return dot;
    }
    __device__ float value(int64_t c, int64_t d) const { return v[c * value_stride + d]; }
};

__global__ void ragged_attention_kernel(RaggedAttentionParams p, const KernelError* err) {
    if (check_failed(err)) return;
    for (int64_t i = blockIdx.x; i < p.num_tokens * p.heads; i += gridDim.x) {
        const int64_t t = i / p.heads, h = i % p.heads;
        const int64_t s = sequence_of(p.query_start, p.num_seqs, t);
        const int64_t q_len = p.query_start[s + 1] - p.query_start[s];
        const int64_t kv_len = p.kv_start[s + 1] - p.kv_start[s];
        const int64_t pos = kv_len - q_len + (t - p.query_start[s]);
        const RaggedKeys keys{p.q + (t * p.heads + h) * p.dqk,
                              p.k + (p.kv_start[s] * p.heads + h) * p.dqk,
                              p.v + (p.kv_start[s] * p.heads + h) * p.dv,
                              p.heads * p.dqk,
                              p.heads * p.dv,
                              p.dqk};
        attend_keys(keys, pos + 1, p.dv, p.scale, p.out + (t * p.heads + h) * p.dv);
    }
}

template <typename CacheT>
struct LatentKeys {
    const float* q_latent;  // [L] of this row and head
    const float* q_rope;    // [R]
    const CacheT* cache;
    const int32_t* table;  // this sequence's block ids
    int64_t block_size, row, latent, rope;
    __device__ const CacheT* cache_row(int64_t c) const {
        return cache + (int64_t{table[c / block_size]} * block_size + c % block_size) * row;
    }
    __device__ float score(int64_t c) const {
        const CacheT* r = cache_row(c);
        float dot = 0.0f;
        for (int64_t d = 0; d < latent; ++d) dot += q_latent[d] * load_as_f32(r, d);
        for (int64_t d = 0; d < rope; ++d) dot += q_rope[d] * load_as_f32(r, latent + d);
        return dot;
    }
    __device__ float value(int64_t c, int64_t d) const { return load_as_f32(cache_row(c), d); }
};

template <typename CacheT>
__global__ void mla_attention_kernel(MlaAttentionParams p, const KernelError* err) {
    if (check_failed(err)) return;
    const CacheT* cache = static_cast<const CacheT*>(p.cache);
    for (int64_t i = blockIdx.x; i < p.num_tokens * p.heads; i += gridDim.x) {
        const int64_t t = i / p.heads, h = i % p.heads;
        const int64_t s = sequence_of(p.query_start, p.num_seqs, t);
        const int64_t q_len = p.query_start[s + 1] - p.query_start[s];
        const int64_t pos = p.kv_lens[s] - q_len + (t - p.query_start[s]);
        const LatentKeys<CacheT> keys{p.q_latent + (t * p.heads + h) * p.latent,
                                      p.q_rope + t * p.q_rope_token_stride + h * p.q_rope_head_stride,
                                      cache,
                                      p.block_tables + s * p.max_blocks,
                                      p.block_size,
                                      p.latent + p.rope,
                                      p.latent,
                                      p.rope};
        attend_keys(keys, pos + 1, p.latent, p.scale, p.out + (t * p.heads + h) * p.latent);
    }
}

inline constexpr int kHeadGemmTokens = 8;

template <typename WT>
__global__ void head_gemm_kernel(HeadGemmParams p) {
    const int64_t n = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
    const int64_t h = blockIdx.y;
    if (n >= p.n) return;
    const WT* w = static_cast<const WT*>(p.w);
    const int64_t base = h * p.head_rows + p.row_offset;
    for (int64_t t0 = blockIdx.z * int64_t{kHeadGemmTokens}; t0 < p.tokens;
         t0 += int64_t{gridDim.z} * kHeadGemmTokens) {
        float acc[kHeadGemmTokens];
#pragma unroll
        for (int j = 0; j < kHeadGemmTokens; ++j) acc[j] = 0.0f;
        const float* x = p.x + t0 * p.x_token_stride + h * p.x_head_stride;
        for (int64_t k = 0; k < p.k; ++k) {
            const float wv =
                p.transpose_w ? load_as_f32(w, (base + n) * p.cols + k) : load_as_f32(w, (base + k) * p.cols + n);
#pragma unroll
            for (int j = 0; j < kHeadGemmTokens; ++j)
                if (t0 + j < p.tokens) acc[j] += x[j * p.x_token_stride + k] * wv;
        }
#pragma unroll
        for (int j = 0; j < kHeadGemmTokens; ++j)
            if (t0 + j < p.tokens) p.out[((t0 + j) * p.heads + h) * p.n + n] = acc[j];
    }
}

// (v, e) ranks before (v2, e2): higher choice, then lower id; e == INT_MAX is "none".
__device__ __forceinline__ bool grouped_better(float v, int e, float v2, int e2) {
    if (e2 == INT_MAX) return e != INT_MAX;
    if (e == INT_MAX) return false;
    return v > v2 || (v == v2 && e < e2);
}

// One warp (the whole block) per token. Shared memory: score[E], choice[E], group score[G],
// kept[G] (as floats).
__global__ void moe_route_grouped_kernel(const float* __restrict__ logits, const float* __restrict__ bias,
                                         int32_t* __restrict__ topk_ids, float* __restrict__ topk_weights,
                                         int64_t num_tokens, int num_experts, int top_k, int num_groups,
                                         int topk_groups, bool renormalize, float scaling_factor) {
    extern __shared__ float route_shared[];
    float* score = route_shared;
    float* choice = score + num_experts;
    float* gscore = choice + num_experts;
    float* kept = gscore + num_groups;
    const int lane = threadIdx.x;
    const int per = num_experts / num_groups;
    for (int64_t t = blockIdx.x; t < num_tokens; t += gridDim.x) {
        const float* row = logits + t * num_experts;
        for (int e = lane; e < num_experts; e += 32) {
            const float sc = 1.0f / (1.0f + expf(-row[e]));
            score[e] = sc;
            choice[e] = sc + bias[e];
        }
        __syncwarp();
        for (int g = lane; g < num_groups; g += 32) {
            float m1 = -INFINITY, m2 = -INFINITY;
            for (int e = g * per; e < (g + 1) * per; ++e) {
                const float c = choice[e];
                if (c > m1) {
                    m2 = m1;
                    m1 = c;
                } else if (c > m2) {
                    m2 = c;
                }
            }
            gscore[g] = per > 1 ? m1 + m2 : m1;
            kept[g] = 0.0f;
        }
        __syncwarp();
        if (lane == 0) {
            // The topk_groups best groups; ties keep the lower group (a stable sort's order).
            for (int i = 0; i < topk_groups; ++i) {
                int best = -1;
                for (int g = 0; g < num_groups; ++g)
                    if (kept[g] == 0.0f && (best < 0 || gscore[g] > gscore[best])) best = g;
                if (best >= 0) kept[best] = 1.0f;
            }
        }
        __syncwarp();
        float last_v = 0.0f, picked = 0.0f;
        int last_e = -1;
        for (int j = 0; j < top_k; ++j) {
            float best_v = 0.0f;
            int best_e = INT_MAX;
            for (int e = lane; e < num_experts; e += 32) {
                if (kept[e / per] == 0.0f) continue;
                const float v = choice[e];
                const bool after_last = j == 0 || v < last_v || (v == last_v && e > last_e);
                if (after_last && grouped_better(v, e, best_v, best_e)) {
                    best_v = v;
                    best_e = e;
                }
            }
#pragma unroll
            for (int offset = 16; offset > 0; offset >>= 1) {
                const float ov = __shfl_xor_sync(0xffffffffu, best_v, offset);
                const int oe = __shfl_xor_sync(0xffffffffu, best_e, offset);
                if (grouped_better(ov, oe, best_v, best_e)) {
                    best_v = ov;
                    best_e = oe;
                }
            }
            if (best_e == INT_MAX) best_e = 0;  // NaN choices never rank; keep the id valid
            picked += score[best_e];
            if (lane == 0) topk_ids[t * top_k + j] = best_e;
            last_v = best_v;
            last_e = best_e;
        }
        __syncwarp();  // lane 0's ids are visible to the warp
        const float denom = renormalize ? picked + 1e-20f : 1.0f;
        for (int j = lane; j < top_k; j += 32)
            topk_weights[t * top_k + j] = score[topk_ids[t * top_k + j]] / denom * scaling_factor;
        __syncwarp();  // score[] and choice[] are rewritten for the next token
    }
}

}  // namespace moe::kernels
