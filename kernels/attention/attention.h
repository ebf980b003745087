// Paged attention launcher (prefill and decode; see AttentionArgs in src/ops/ops.h for the
// semantics, which these params mirror one to one).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/attention/attention_plan.h"
#include "kernels/common/kernel_types.h"

namespace moe::kernels {

struct AttentionParams {
    const float* q = nullptr;       // [T, Hq, D]
    const void* k_cache = nullptr;  // [num_blocks, block_size, Hkv, D], f32 or bf16
    const void* v_cache = nullptr;
    const int32_t* block_tables = nullptr;  // [S, max_blocks_per_seq]
    const int32_t* query_start = nullptr;   // [S + 1]
    const int32_t* kv_lens = nullptr;       // [S]
    float* out = nullptr;                   // [T, Hq, D]
    float* partials = nullptr;              // plan.partial_floats floats when plan.num_splits > 1
    int64_t num_tokens = 0;
    int64_t num_seqs = 0;
    int64_t num_q_heads = 0;
    int64_t num_kv_heads = 0;
    int64_t head_dim = 0;
    int64_t block_size = 0;
    int64_t num_blocks = 0;
    int64_t max_blocks_per_seq = 0;
    float scale = 1.0f;
    int sliding_window = 0;
    const float* sinks = nullptr;  // [num_q_heads] or null (AttentionArgs::sinks)
};

// Metadata errors (query_start not starting at 0 / not ending at T / decreasing, kv_lens outside
// [q_len, max_blocks_per_seq * block_size], a visible block id outside [0, num_blocks)) are
// recorded in `err` with the sequence index as the row (S for query_start[S]); the kernel never
// reads or writes out of bounds because of them. Asynchronous on `stream`.
cudaError_t launch_attention(const AttentionParams& p, ElemType cache_type, const AttentionPlan& plan, KernelError* err,
                             cudaStream_t stream);

}  // namespace moe::kernels
