// Launchers of the MLA ops and DeepSeek-V3's grouped router (src/ops/mla_ops.h has the semantics;
// the adapters in src/backend/cuda/cuda_mla_ops.cc map the op Args onto these).
//
// Index checking: every op that indexes with data (positions, slots, sequence metadata, block
// tables) first runs a check kernel that records any bad entry in `err` with exactly the
// conditions of the host checks (ops/mla_data_checks.cc); the main kernel reads `err` when it
// starts and writes nothing when a bad entry was recorded, so a bad input leaves the outputs as
// the CPU backends leave them (untouched) and nothing is read or written out of bounds. The
// caller zeroes `err` before and reads it after (backend/cuda).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/common/kernel_types.h"

namespace moe::kernels {

// Threads of the attention kernels' blocks: keys are scored 128 at a time and each thread keeps
// up to kMlaMaxDimsPerThread output dims, so the value dim must be at most 128 * that.
inline constexpr int kMlaThreads = 128;
inline constexpr int kMlaMaxDimsPerThread = 8;
inline constexpr int64_t kMlaMaxValueDim = int64_t{kMlaThreads} * kMlaMaxDimsPerThread;
// The grouped router keeps a token's scores in shared memory (2 floats per expert).
inline constexpr int64_t kRouteGroupedMaxExperts = 4096;

// Records (in err) every values[i] outside [lo, hi), i < n. i32 or i64 values.
cudaError_t launch_check_index_range_i32(const int32_t* values, int64_t n, int64_t lo, int64_t hi, KernelError* err,
                                         cudaStream_t stream);
cudaError_t launch_check_index_range_i64(const int64_t* values, int64_t n, int64_t lo, int64_t hi, KernelError* err,
                                         cudaStream_t stream);

// x [rows, dim] f32 with row stride ld, rotated in place; rows = num_tokens * rows_per_token,
// row r at positions[r / rows_per_token] (already checked >= 0). inv_freq [dim / 2].
cudaError_t launch_rope_table(float* x, int64_t ld, int64_t rows, int64_t dim, const int32_t* positions,
                              int64_t rows_per_token, const float* inv_freq, float attention_factor, bool interleaved,
                              const KernelError* err, cudaStream_t stream);

// rows [T, D] f32 (row stride ld) -> cache rows at slot_mapping[t] (-1 skips); cache [slots, D].
cudaError_t launch_latent_write(const float* rows, int64_t ld, const int64_t* slot_mapping, int64_t num_tokens,
                                int64_t dim, void* cache, ElemType cache_type, const KernelError* err,
                                cudaStream_t stream);

// out [N, D] f32 contiguous = cache rows at slots[n].
cudaError_t launch_latent_gather(const void* cache, ElemType cache_type, const int64_t* slots, int64_t n, int64_t dim,
                                 float* out, const KernelError* err, cudaStream_t stream);

// kv [N, H, nope + dv], k_rope [N, rope] (row stride ld_rope) -> k [N, H, nope + rope], v [N, H, dv].
cudaError_t launch_mla_expand(const float* kv, const float* k_rope, int64_t ld_rope, float* k, float* v, int64_t n,
                              int64_t heads, int64_t nope, int64_t rope, int64_t dv, cudaStream_t stream);

// Records a bad entry when the ragged metadata fails what check_ragged_attention_data checks:
// starts begin at 0, never decrease and end at num_tokens / num_kv; kv_len >= q_len.
cudaError_t launch_check_ragged_meta(const int32_t* query_start, const int32_t* kv_start, int64_t num_seqs,
                                     int64_t num_tokens, int64_t num_kv, KernelError* err, cudaStream_t stream);

// Records a bad entry when the paged metadata fails what check_attention_data checks (query_start
// as above, q_len <= kv_lens[s] <= max_blocks * block_size, the block ids a query row sees inside
// [0, num_blocks)).
cudaError_t launch_check_paged_meta(const int32_t* query_start, const int32_t* kv_lens, const int32_t* block_tables,
                                    int64_t num_seqs, int64_t num_tokens, int64_t max_blocks, int64_t block_size,
                                    int64_t num_blocks, KernelError* err, cudaStream_t stream);

struct RaggedAttentionParams {
    const float* q = nullptr;  // [T, H, dqk]
    const float* k = nullptr;  // [N, H, dqk]
    const float* v = nullptr;  // [N, H, dv]
    const int32_t* query_start = nullptr;
    const int32_t* kv_start = nullptr;
    float* out = nullptr;  // [T, H, dv]
    int64_t num_tokens = 0, num_seqs = 0, heads = 0, dqk = 0, dv = 0;
    float scale = 1.0f;
};
// One block per (query row, head); dv <= kMlaMaxValueDim.
cudaError_t launch_ragged_attention(const RaggedAttentionParams& p, const KernelError* err, cudaStream_t stream);

struct MlaAttentionParams {
    const float* q_latent = nullptr;  // [T, H, L] contiguous
    const float* q_rope = nullptr;    // [T, H, R] with token / head strides
    int64_t q_rope_token_stride = 0, q_rope_head_stride = 0;
    const void* cache = nullptr;  // [num_blocks, block_size, L + R]
    const int32_t* block_tables = nullptr;
    const int32_t* query_start = nullptr;
    const int32_t* kv_lens = nullptr;
    float* out = nullptr;  // [T, H, L]
    int64_t num_tokens = 0, num_seqs = 0, heads = 0, latent = 0, rope = 0;
    int64_t block_size = 0, max_blocks = 0;
    float scale = 1.0f;
};
// One block per (query row, head); latent <= kMlaMaxValueDim.
cudaError_t launch_mla_attention(const MlaAttentionParams& p, ElemType cache_type, const KernelError* err,
                                 cudaStream_t stream);

struct HeadGemmParams {
    const float* x = nullptr;  // [T, H, K], strides x_token / x_head, unit inside a head
    int64_t x_token_stride = 0, x_head_stride = 0;
    const void* w = nullptr;  // [H * head_rows, C]
    int64_t head_rows = 0, row_offset = 0, cols = 0;
    bool transpose_w = false;
    float* out = nullptr;  // [T, H, N] contiguous
    int64_t tokens = 0, heads = 0, k = 0, n = 0;
};
cudaError_t launch_head_gemm(const HeadGemmParams& p, ElemType w_type, cudaStream_t stream);

// logits [T, E], bias [E] -> topk_ids / topk_weights [T, top_k]; num_groups divides E,
// E <= kRouteGroupedMaxExperts. One warp per token.
cudaError_t launch_moe_route_grouped(const float* logits, const float* bias, int32_t* topk_ids, float* topk_weights,
                                     int64_t num_tokens, int64_t num_experts, int top_k, int num_groups,
                                     int topk_groups, bool renormalize, float scaling_factor, cudaStream_t stream);

}  // namespace moe::kernels
