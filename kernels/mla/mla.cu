#include <cuda_bf16.h>

#include "kernels/common/launch.h"
#include "kernels/mla/mla.cuh"
#include "kernels/mla/mla.h"

namespace moe::kernels {
namespace {

constexpr int kThreads = 256;

// Attention blocks: one per (row, head), capped (the kernels loop over the rest).
unsigned attention_grid(int64_t pairs) {
    return static_cast<unsigned>(std::clamp<int64_t>(pairs, 1, kMaxGridX));
}

}  // namespace

cudaError_t launch_check_index_range_i32(const int32_t* values, int64_t n, int64_t lo, int64_t hi, KernelError* err,
                                         cudaStream_t stream) {
    if (n == 0) return cudaSuccess;
    check_index_range_kernel<int32_t><<<grid_for(n, kThreads), kThreads, 0, stream>>>(values, n, lo, hi, err);
    return cudaGetLastError();
}

cudaError_t launch_check_index_range_i64(const int64_t* values, int64_t n, int64_t lo, int64_t hi, KernelError* err,
                                         cudaStream_t stream) {
    if (n == 0) return cudaSuccess;
    check_index_range_kernel<int64_t><<<grid_for(n, kThreads), kThreads, 0, stream>>>(values, n, lo, hi, err);
    return cudaGetLastError();
}

cudaError_t launch_rope_table(float* x, int64_t ld, int64_t rows, int64_t dim, const int32_t* positions,
                              int64_t rows_per_token, const float* inv_freq, float attention_factor, bool interleaved,
                              const KernelError* err, cudaStream_t stream) {
    const int64_t half = dim / 2;
    if (rows == 0 || half == 0) return cudaSuccess;
    rope_table_kernel<<<grid_for(rows * half, kThreads), kThreads, 0, stream>>>(
        x, ld, rows, half, positions, rows_per_token, inv_freq, attention_factor, interleaved, err);
    return cudaGetLastError();
}

cudaError_t launch_latent_write(const float* rows, int64_t ld, const int64_t* slot_mapping, int64_t num_tokens,
                                int64_t dim, void* cache, ElemType cache_type, const KernelError* err,
                                cudaStream_t stream) {
    if (num_tokens == 0 || dim == 0) return cudaSuccess;
    const unsigned grid = grid_for(num_tokens, 1);
    const int threads = threads_for_row(dim, 1, 256);
    if (cache_type == ElemType::kF32) {
        latent_write_kernel<float>
            <<<grid, threads, 0, stream>>>(rows, ld, slot_mapping, num_tokens, dim, static_cast<float*>(cache), err);
    } else {
        latent_write_kernel<__nv_bfloat16><<<grid, threads, 0, stream>>>(rows, ld, slot_mapping, num_tokens, dim,
                                                                         static_cast<__nv_bfloat16*>(cache), err);
    }
    return cudaGetLastError();
}

cudaError_t launch_latent_gather(const void* cache, ElemType cache_type, const int64_t* slots, int64_t n, int64_t dim,
                                 float* out, const KernelError* err, cudaStream_t stream) {
    if (n == 0 || dim == 0) return cudaSuccess;
    const unsigned grid = grid_for(n, 1);
    const int threads = threads_for_row(dim, 1, 256);
    if (cache_type == ElemType::kF32) {
        latent_gather_kernel<float>
            <<<grid, threads, 0, stream>>>(static_cast<const float*>(cache), slots, n, dim, out, err);
    } else {
        latent_gather_kernel<__nv_bfloat16>
            <<<grid, threads, 0, stream>>>(static_cast<const __nv_bfloat16*>(cache), slots, n, dim, out, err);
    }
    return cudaGetLastError();
}

cudaError_t launch_mla_expand(const float* kv, const float* k_rope, int64_t ld_rope, float* k, float* v, int64_t n,
                              int64_t heads, int64_t nope, int64_t rope, int64_t dv, cudaStream_t stream) {
    const int64_t total = n * heads * (nope + rope + dv);
    if (total == 0) return cudaSuccess;
    mla_expand_kernel<<<grid_for(total, kThreads), kThreads, 0, stream>>>(kv, k_rope, ld_rope, k, v, n, heads, nope,
                                                                          rope, dv);
    return cudaGetLastError();
}

cudaError_t launch_check_ragged_meta(const int32_t* query_start, const int32_t* kv_start, int64_t num_seqs,
                                     int64_t num_tokens, int64_t num_kv, KernelError* err, cudaStream_t stream) {
    check_ragged_meta_kernel<<<1, kThreads, 0, stream>>>(query_start, kv_start, num_seqs, num_tokens, num_kv, err);
    return cudaGetLastError();
}

cudaError_t launch_check_paged_meta(const int32_t* query_start, const int32_t* kv_lens, const int32_t* block_tables,
                                    int64_t num_seqs, int64_t num_tokens, int64_t max_blocks, int64_t block_size,
                                    int64_t num_blocks, KernelError* err, cudaStream_t stream) {
    check_paged_meta_kernel<<<1, kThreads, 0, stream>>>(query_start, kv_lens, block_tables, num_seqs, num_tokens,
                                                        max_blocks, block_size, num_blocks, err);
    return cudaGetLastError();
}

cudaError_t launch_ragged_attention(const RaggedAttentionParams& p, const KernelError* err, cudaStream_t stream) {
    if (p.num_tokens == 0 || p.heads == 0) return cudaSuccess;
    ragged_attention_kernel<<<attention_grid(p.num_tokens * p.heads), kMlaThreads, 0, stream>>>(p, err);
    return cudaGetLastError();
}

cudaError_t launch_mla_attention(const MlaAttentionParams& p, ElemType cache_type, const KernelError* err,
                                 cudaStream_t stream) {
    if (p.num_tokens == 0 || p.heads == 0) return cudaSuccess;
    const unsigned grid = attention_grid(p.num_tokens * p.heads);
    if (cache_type == ElemType::kF32) {
        mla_attention_kernel<float><<<grid, kMlaThreads, 0, stream>>>(p, err);
    } else {
        mla_attention_kernel<__nv_bfloat16><<<grid, kMlaThreads, 0, stream>>>(p, err);
    }
    return cudaGetLastError();
}

cudaError_t launch_head_gemm(const HeadGemmParams& p, ElemType w_type, cudaStream_t stream) {
    if (p.tokens == 0 || p.heads == 0 || p.n == 0) return cudaSuccess;
    constexpr int kCols = 128;
    const dim3 grid(static_cast<unsigned>(ceil_div(p.n, kCols)), static_cast<unsigned>(p.heads),
                    static_cast<unsigned>(std::min<int64_t>(ceil_div(p.tokens, kHeadGemmTokens), 65535)));
    if (w_type == ElemType::kF32) {
        head_gemm_kernel<float><<<grid, kCols, 0, stream>>>(p);
    } else {
        head_gemm_kernel<__nv_bfloat16><<<grid, kCols, 0, stream>>>(p);
    }
    return cudaGetLastError();
}

cudaError_t launch_moe_route_grouped(const float* logits, const float* bias, int32_t* topk_ids, float* topk_weights,
                                     int64_t num_tokens, int64_t num_experts, int top_k, int num_groups,
                                     int topk_groups, bool renormalize, float scaling_factor, cudaStream_t stream) {
    if (num_tokens == 0) return cudaSuccess;
    const size_t shared = (2 * static_cast<size_t>(num_experts) + 2 * static_cast<size_t>(num_groups)) * sizeof(float);
    moe_route_grouped_kernel<<<grid_for(num_tokens, 1), 32, shared, stream>>>(
        logits, bias, topk_ids, topk_weights, num_tokens, static_cast<int>(num_experts), top_k, num_groups, topk_groups,
        renormalize, scaling_factor);
    return cudaGetLastError();
}

}  // namespace moe::kernels
