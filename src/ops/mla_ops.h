// The ops of multi-head latent attention (DeepSeek-V2/V3, Kimi K2) and of DeepSeek-V3's router,
// with the conventions of ops/ops.h: one Args struct each, one validate() above every backend, a
// naive reference (namespace moe::ref) and an OpTable entry per backend (null: kUnimplemented).
//
// The two MLA attention paths (see model/mla_attention.h):
//   expanded (prefill):  latent_gather -> gemm(kv_b_proj) -> mla_expand -> ragged_attention
//   absorbed (decode):   head_gemm(W_UK) -> mla_attention over the latent -> head_gemm(W_UV)
#pragma once

#include "moe/backend.h"
#include "moe/status.h"
#include "moe/tensor.h"

namespace moe {

// RoPE from a precomputed frequency table (plain or YaRN), in place on the rows of x.
// Row r of R = T * (R / T) rows uses positions[r / (R / T)]. Pair i < D/2 has angle
// pos * inv_freq[i] and is (x[i], x[i + D/2]) (rotate-half) or (x[2i], x[2i+1]) (interleaved):
// (a, b) -> (a cos - b sin, b cos + a sin) with cos and sin multiplied by attention_factor.
// NOTE: transformers de-interleaves rope_interleave heads (q[2i] -> i, q[2i+1] -> i + D/2)
// before rotating; rotating the pairs in place is the same permutation applied to q and k, so
// every q.k product (all that attention reads) is equal.
struct RopeTableArgs {
    TensorView x;          // f32 [R, D], row stride allowed, D even
    TensorView positions;  // i32 [T], each >= 0; R % T == 0
    TensorView inv_freq;   // f32 [D / 2]
    float attention_factor = 1.0f;
    bool interleaved = false;
};

// Writes rows into a paged cache of rows: row t goes to block slot_mapping[t] / block_size,
// offset slot_mapping[t] % block_size; a slot of -1 skips the row.
struct LatentWriteArgs {
    TensorView rows;          // f32 [T, D], row stride allowed
    TensorView slot_mapping;  // i64 [T]
    TensorView cache;         // f32|bf16 [num_blocks, block_size, D]
};

// The inverse: out[n, :] = the cache row at slots[n] (every slot inside the cache).
struct LatentGatherArgs {
    TensorView cache;  // f32|bf16 [num_blocks, block_size, D]
    TensorView slots;  // i64 [N]
    TensorView out;    // f32 [N, D]
};

// Per-head keys and values from kv_b_proj's output and the shared rope key:
//   k[n, h, :] = (kv[n, h, :nope], k_rope[n, :]),   v[n, h, :] = kv[n, h, nope:]
// with nope = k.dim(2) - k_rope.dim(1).
struct MlaExpandArgs {
    TensorView kv;      // f32 [N, H, nope + v_dim], contiguous
    TensorView k_rope;  // f32 [N, rope], row stride allowed
    TensorView k;       // f32 [N, H, nope + rope], contiguous
    TensorView v;       // f32 [N, H, v_dim], contiguous
};

// Causal attention of a ragged batch over per-sequence contiguous keys and values whose head
// dim may differ from the query's (MLA's expanded path). Sequence s owns query rows
// [query_start[s], query_start[s+1]) and kv rows [kv_start[s], kv_start[s+1]); with q_len and
// kv_len their counts (kv_len >= q_len), query row j sits at position p = kv_len - q_len + j and
// attends to kv positions [0, p]. Bad metadata is kOutOfRange.
struct RaggedAttentionArgs {
    TensorView q;            // f32 [T, H, Dqk], contiguous
    TensorView k;            // f32 [N, H, Dqk], contiguous
    TensorView v;            // f32 [N, H, Dv], contiguous
    TensorView query_start;  // i32 [S + 1], query_start[0] == 0, query_start[S] == T
    TensorView kv_start;     // i32 [S + 1], kv_start[0] == 0, kv_start[S] == N
    TensorView out;          // f32 [T, H, Dv], contiguous
    float scale = 1.0f;
};

// Attention over the paged MLA latent cache with the absorbed query (the decode path; any
// q_len is correct). With L = q_latent.dim(2) and a cache row c = (latent[:L], rope key[L:]):
//   score(t, h, c) = scale * (q_latent[t, h] . c[:L] + q_rope[t, h] . c[L:])
//   out[t, h] = sum_c softmax_c(score) * c[:L]
// Sequences, positions and block tables as in AttentionArgs (no sliding window).
struct MlaAttentionArgs {
    TensorView q_latent;      // f32 [T, H, L], contiguous
    TensorView q_rope;        // f32 [T, H, R], unit stride inside a head, token and head strides allowed
    TensorView cache;         // f32|bf16 [num_blocks, block_size, L + R]
    TensorView block_tables;  // i32 [S, max_blocks_per_seq]
    TensorView query_start;   // i32 [S + 1]
    TensorView kv_lens;       // i32 [S]
    TensorView out;           // f32 [T, H, L], contiguous
    float scale = 1.0f;
};

// Per-head products with slices of one weight w [H * P, C] (kv_b_proj: P = nope + v rows a head):
//   transpose_w false: out[t, h, n] = sum_k x[t, h, k] * w[h * P + row_offset + k, n]   (K rows; N == C)
//   transpose_w true:  out[t, h, n] = sum_k x[t, h, k] * w[h * P + row_offset + n, k]   (N rows; K == C)
// The first folds W_UK into the query (q_nope -> latent), the second applies W_UV after attention.
struct HeadGemmArgs {
    TensorView x;  // f32 [T, H, K], unit stride inside a head, token and head strides allowed
    TensorView w;  // f32|bf16 [H * head_rows, C], contiguous
    int64_t head_rows = 0;
    int64_t row_offset = 0;
    bool transpose_w = false;
    TensorView out;  // f32 [T, H, N], contiguous
};

// DeepSeek-V3's router (topk_method noaux_tc, scoring_func sigmoid). Per token:
//   score[e] = sigmoid(logits[e]); choice[e] = score[e] + bias[e]   (the bias only chooses)
//   group g (E / num_groups consecutive experts) scores the sum of its top-2 choices (its one
//   choice for groups of one); the topk_groups best groups are kept (ties: lower group first);
//   topk_ids: the top_k experts of the kept groups by choice, descending (ties: lower id first);
//   topk_weights: their unbiased scores, divided by (their sum + 1e-20) when renormalize, then
//   times scaling_factor.
struct MoeRouteGroupedArgs {
    TensorView logits;        // f32 [T, E]
    TensorView bias;          // f32 [E]
    TensorView topk_ids;      // i32 [T, top_k]
    TensorView topk_weights;  // f32 [T, top_k]
    int top_k = 1;
    int num_groups = 1;   // divides E
    int topk_groups = 1;  // in [1, num_groups]; top_k <= topk_groups * E / num_groups
    bool renormalize = false;
    float scaling_factor = 1.0f;
};

namespace ops {

Status validate(const RopeTableArgs& a);
Status validate(const LatentWriteArgs& a);
Status validate(const LatentGatherArgs& a);
Status validate(const MlaExpandArgs& a);
Status validate(const RaggedAttentionArgs& a);
Status validate(const MlaAttentionArgs& a);
Status validate(const HeadGemmArgs& a);
Status validate(const MoeRouteGroupedArgs& a);

Status run(Backend& be, const RopeTableArgs& a);
Status run(Backend& be, const LatentWriteArgs& a);
Status run(Backend& be, const LatentGatherArgs& a);
Status run(Backend& be, const MlaExpandArgs& a);
Status run(Backend& be, const RaggedAttentionArgs& a);
Status run(Backend& be, const MlaAttentionArgs& a);
Status run(Backend& be, const HeadGemmArgs& a);
Status run(Backend& be, const MoeRouteGroupedArgs& a);

// Data checks (host memory), run by the references and the CPU kernels before any write.
Status check_rope_table_data(const RopeTableArgs& a);
Status check_latent_write_data(const LatentWriteArgs& a);
Status check_latent_gather_data(const LatentGatherArgs& a);
Status check_ragged_attention_data(const RaggedAttentionArgs& a);
Status check_mla_attention_data(const MlaAttentionArgs& a);

}  // namespace ops

namespace ref {
Status rope_table(const RopeTableArgs& a);
Status latent_write(const LatentWriteArgs& a);
Status latent_gather(const LatentGatherArgs& a);
Status mla_expand(const MlaExpandArgs& a);
Status ragged_attention(const RaggedAttentionArgs& a);
Status mla_attention(const MlaAttentionArgs& a);
Status head_gemm(const HeadGemmArgs& a);
Status moe_route_grouped(const MoeRouteGroupedArgs& a);
}  // namespace ref

}  // namespace moe
