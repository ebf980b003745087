// The op layer: one Args struct per op, one validate() run above every backend, a naive
// reference per op (src/ops/*_ref.cc, namespace moe::ref) and a dispatcher (ops::run).
//
// Conventions for every op:
// - Activations are f32. Large weight matrices (gemm, experts, embedding table) are f32 or bf16.
//   Small weights (norms, biases) are f32 (the model converts them at load).
// - Shapes are in elements; views may have a row stride larger than the row length where the
//   comment says "row stride allowed", otherwise they must be contiguous.
// - Index tensors are i32 unless stated.
// - Outputs never alias inputs unless the comment says so.
// - Matrices (WeightView) may carry a handle the backend made at load (Backend::prepare_weight);
//   its kernels then read the handle, and the tensor only gives dtype and shape (its data may be
//   null). The references read the tensor's data only.
// - Ops never log; they return Status. validate() reports the argument's name and the limit.
#pragma once

#include <algorithm>
#include <cmath>
#include <span>

#include "moe/backend.h"
#include "moe/status.h"
#include "moe/tensor.h"

namespace moe {

// out[t, :] = table[ids[t], :]
struct EmbeddingArgs {
    TensorView ids;    // i32 [T]; every id in [0, V) (checked by the kernel: OutOfRange)
    TensorView table;  // f32|bf16 [V, H]
    TensorView out;    // f32 [T, H]
};

// out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight
struct RmsNormArgs {
    TensorView x;       // f32 [R, D], row stride allowed
    TensorView weight;  // f32 [D]
    TensorView out;     // f32 [R, D], row stride allowed; may alias x (in place)
    float eps = 1e-6f;
};

// Rotary embedding, "rotate half" (GPT-NeoX) layout, in place on q and k.
// For pair i < rotary_dim/2 of a head: angle = pos * theta^(-2i/rotary_dim),
// (x[i], x[i + rotary_dim/2]) -> (x[i] cos - x[i+h] sin, x[i+h] cos + x[i] sin).
// Dimensions at and past rotary_dim are left alone.
// With inv_freq (YaRN, computed on the host as transformers does: gpt-oss), angle = pos *
// inv_freq[i] instead, and cos and sin are multiplied by attention_factor.
struct RopeArgs {
    TensorView q;          // f32 [T, num_q_heads, head_dim], contiguous
    TensorView k;          // f32 [T, num_kv_heads, head_dim], contiguous
    TensorView positions;  // i32 [T], >= 0
    float theta = 10000.0f;
    int rotary_dim = 0;             // even, <= head_dim
    TensorView inv_freq;            // optional (empty) or f32 [rotary_dim / 2]
    float attention_factor = 1.0f;  // with inv_freq only; finite
};

// y[M, N] (+)= x[M, K] * w[N, K]^T (+ bias[N])      (w in the Hugging Face Linear layout)
struct GemmArgs {
    TensorView x;             // f32 [M, K], row stride allowed
    WeightView w;             // f32|bf16 [N, K], contiguous (or prepared by the backend)
    TensorView bias;          // optional (empty) or f32 [N]
    TensorView y;             // f32 [M, N], row stride allowed
    bool accumulate = false;  // y += instead of y =
};

// out = silu(gate) * up, elementwise. silu(v) = v / (1 + exp(-v)).
struct SiluMulArgs {
    TensorView gate;  // f32 [M, I], row stride allowed
    TensorView up;    // f32 [M, I], row stride allowed
    TensorView out;   // f32 [M, I], contiguous; may alias gate
};

// out = a + b, elementwise over [M, N].
struct AddArgs {
    TensorView a;    // f32 [M, N], contiguous
    TensorView b;    // f32 [M, N], contiguous
    TensorView out;  // f32 [M, N], contiguous; may alias a or b
};

// Writes the new tokens' keys and values into the paged cache.
// Cache layout: [num_blocks, block_size, num_kv_heads, head_dim].
// Token t goes to block slot_mapping[t] / block_size, offset slot_mapping[t] % block_size.
// A slot of -1 means "skip this token".
struct KvWriteArgs {
    TensorView k;             // f32 [T, num_kv_heads, head_dim]
    TensorView v;             // f32 [T, num_kv_heads, head_dim]
    TensorView slot_mapping;  // i64 [T]
    TensorView k_cache;       // f32|bf16 [num_blocks, block_size, num_kv_heads, head_dim]
    TensorView v_cache;       // same shape and dtype as k_cache
};

// Attention of a ragged batch over a paged KV cache, for prefill and decode alike.
//
// Sequence s owns query rows [query_start[s], query_start[s+1]) of q and has kv_lens[s] tokens
// in the cache, the new ones included (they were written by kv_write first). With
// q_len = query_start[s+1] - query_start[s], query row j of s sits at position
// p = kv_lens[s] - q_len + j and attends causally to cache positions [max(0, p - window + 1), p]
// (window = sliding_window, or unlimited when 0). Cache position c lives in block
// block_tables[s, c / block_size] at offset c % block_size. Query head h reads KV head
// h / (num_q_heads / num_kv_heads) (GQA).
//
// With sinks (gpt-oss), head h's softmax denominator has one more term, exp(sinks[h]), a
// learned logit with no value: out = sum_c exp(s_c) v_c / (exp(sinks[h]) + sum_c exp(s_c)).
//
// A prefill chunk after a cached prefix is just q_len < kv_lens; decode is q_len == 1.
// Only the block-table entries a query can see are read (and checked): entries wholly before a
// sliding window may be -1. Bad metadata (query_start, kv_lens, block ids) is kOutOfRange.
// Backends that run asynchronously (CUDA) make results visible after Backend::copy() or
// synchronize().
struct AttentionArgs {
    TensorView q;             // f32 [T, num_q_heads, head_dim]
    TensorView k_cache;       // f32|bf16 [num_blocks, block_size, num_kv_heads, head_dim]
    TensorView v_cache;       // same as k_cache
    TensorView block_tables;  // i32 [S, max_blocks_per_seq]
    TensorView query_start;   // i32 [S + 1], non-decreasing, query_start[0] == 0, query_start[S] == T
    TensorView kv_lens;       // i32 [S], kv_lens[s] >= q_len of s, <= max_blocks_per_seq * block_size
    TensorView out;           // f32 [T, num_q_heads, head_dim]
    float scale = 1.0f;       // usually 1/sqrt(head_dim)
    int sliding_window = 0;   // 0: none
    TensorView sinks;         // optional (empty) or f32 [num_q_heads], finite
};

// Router: probabilities = softmax(logits[t, :]) (computed in f32 at least); the top_k experts
// by probability (ties: lower expert id first), in descending order; weights are their
// probabilities, divided by their sum when renormalize is set.
// NOTE: implementations rank by logit, which is the same order as by exact probability and
// avoids false ties where two probabilities round to the same float.
struct MoeRouteArgs {
    TensorView logits;        // f32 [T, E]
    TensorView topk_ids;      // i32 [T, top_k]
    TensorView topk_weights;  // f32 [T, top_k]
    int top_k = 1;
    bool renormalize = false;
};

// Qwen2-MoE shared expert: y[t, :] += sigmoid(gate_logits[t]) * shared_out[t, :]
struct MoeSharedGateArgs {
    TensorView gate_logits;  // f32 [T, 1]
    TensorView shared_out;   // f32 [T, H]
    TensorView y;            // f32 [T, H]
};

// Groups the (token, slot) pairs by expert. Within an expert, pairs keep (token, slot) order,
// so the result is deterministic. Row r of x_permuted is x[token_of[r]].
struct MoePermuteArgs {
    TensorView x;         // f32 [T, H]
    TensorView topk_ids;  // i32 [T, top_k], each in [0, num_experts) (kernel: OutOfRange)
    int num_experts = 0;
    TensorView x_permuted;      // f32 [T * top_k, H]
    TensorView expert_offsets;  // i32 [num_experts + 1]: rows of expert e are [offsets[e], offsets[e+1])
    TensorView row_of;          // i32 [T * top_k]: row_of[t * top_k + j] = row of pair (t, j)
    TensorView token_of;        // i32 [T * top_k]: token_of[r] = t of row r
};

// The activation between an expert's gate/up and down products.
enum class ExpertActivation {
    kSwiGLU,         // silu(g) * u
    kClampedSwiGLU,  // gpt-oss: g' = min(g, limit), u' = clamp(u, -limit, limit),
                     //          (u' + 1) * g' * sigmoid(alpha * g')
};

// Grouped expert MLP with SwiGLU: for each expert e and each row r of e,
// g = w_gate[e] * x[r] (+ b_gate[e]), u = w_up[e] * x[r] (+ b_up[e]),
// out[r] = w_down[e] * act(g, u) (+ b_down[e]).
// Experts with no rows are skipped (their weights are not read, and their views may be empty:
// under expert parallelism a rank holds only its own experts). An expert with rows and no
// weights is an invalid argument.
struct MoeExpertsArgs {
    TensorView x_permuted;               // f32 [R, H]
    TensorView expert_offsets;           // i32 [E + 1], offsets[E] == R
    std::span<const WeightView> w_gate;  // E weights, f32|bf16 [I, H]
    std::span<const WeightView> w_up;    // E weights, f32|bf16 [I, H]
    std::span<const WeightView> w_down;  // E weights, f32|bf16 [H, I]
    TensorView out_permuted;             // f32 [R, H]
    // Biases (gpt-oss): each span empty (no bias) or E views, f32 [I], [I], [H]; a view may be
    // empty for an expert without rows, as its weights may.
    std::span<const TensorView> b_gate = {};
    std::span<const TensorView> b_up = {};
    std::span<const TensorView> b_down = {};
    ExpertActivation activation = ExpertActivation::kSwiGLU;
    float swiglu_alpha = 1.702f;  // kClampedSwiGLU only
    float swiglu_limit = 7.0f;    // kClampedSwiGLU only, > 0
};

// The activation of one element, in f32 (the CPU kernels and the CUDA kernel compute this same
// expression; the reference computes it in double).
inline float expert_activation(ExpertActivation act, float g, float u, float alpha, float limit) {
    if (act == ExpertActivation::kSwiGLU) return g / (1.0f + std::exp(-g)) * u;
    g = std::min(g, limit);
    u = std::min(std::max(u, -limit), limit);
    return (u + 1.0f) * (g / (1.0f + std::exp(-alpha * g)));
}

// Weighted combine: y[t] (+)= sum_j topk_weights[t, j] * out_permuted[row_of[t * top_k + j]],
// summed in slot order j = 0..top_k-1.
struct MoeUnpermuteArgs {
    TensorView out_permuted;  // f32 [T * top_k, H]
    TensorView row_of;        // i32 [T * top_k]
    TensorView topk_weights;  // f32 [T, top_k]
    TensorView y;             // f32 [T, H]
    bool accumulate = false;
};

namespace ops {

// Shape, dtype and layout checks; the same for every backend.
Status validate(const EmbeddingArgs& a);
Status validate(const RmsNormArgs& a);
Status validate(const RopeArgs& a);
Status validate(const GemmArgs& a);
Status validate(const SiluMulArgs& a);
Status validate(const AddArgs& a);
Status validate(const KvWriteArgs& a);
Status validate(const AttentionArgs& a);
Status validate(const MoeRouteArgs& a);
Status validate(const MoeSharedGateArgs& a);
Status validate(const MoePermuteArgs& a);
Status validate(const MoeExpertsArgs& a);
Status validate(const MoeUnpermuteArgs& a);

// validate(), then the backend's table entry (kUnimplemented when it has none).
Status run(Backend& be, const EmbeddingArgs& a);
Status run(Backend& be, const RmsNormArgs& a);
Status run(Backend& be, const RopeArgs& a);
Status run(Backend& be, const GemmArgs& a);
Status run(Backend& be, const SiluMulArgs& a);
Status run(Backend& be, const AddArgs& a);
Status run(Backend& be, const KvWriteArgs& a);
Status run(Backend& be, const AttentionArgs& a);
Status run(Backend& be, const MoeRouteArgs& a);
Status run(Backend& be, const MoeSharedGateArgs& a);
Status run(Backend& be, const MoePermuteArgs& a);
Status run(Backend& be, const MoeExpertsArgs& a);
Status run(Backend& be, const MoeUnpermuteArgs& a);

}  // namespace ops

// Deliberately naive references (plain loops, double accumulation), host memory only.
// They validate their arguments too. Tests compare every backend against them.
namespace ref {
Status embedding(const EmbeddingArgs& a);
Status rms_norm(const RmsNormArgs& a);
Status rope(const RopeArgs& a);
Status gemm(const GemmArgs& a);
Status silu_mul(const SiluMulArgs& a);
Status add(const AddArgs& a);
Status kv_write(const KvWriteArgs& a);
Status attention(const AttentionArgs& a);
Status moe_route(const MoeRouteArgs& a);
Status moe_shared_gate(const MoeSharedGateArgs& a);
Status moe_permute(const MoePermuteArgs& a);
Status moe_experts(const MoeExpertsArgs& a);
Status moe_unpermute(const MoeUnpermuteArgs& a);
}  // namespace ref

}  // namespace moe
