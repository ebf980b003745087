#include <cuda_bf16.h>

#include "kernels/attention/attention.cuh"
#include "kernels/attention/attention.h"
#include "kernels/common/launch.h"

namespace moe::kernels {
namespace {

template <int HD, int RPW, typename CacheT>
cudaError_t launch_instance(const AttentionParams& p, const AttentionPlan& plan, KernelError* err,
                            cudaStream_t stream) {
    auto* kernel = &attention_kernel<HD, RPW, CacheT>;
    // Over 48 KiB of dynamic shared memory (head_dim 256) needs the opt-in.
    if (plan.smem_bytes > 48 * 1024) {
        const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                   static_cast<int>(plan.smem_bytes));
        if (e != cudaSuccess) return e;
    }
    const dim3 grid(static_cast<unsigned>(plan.grid_x), static_cast<unsigned>(plan.grid_y),
                    static_cast<unsigned>(plan.num_splits));
    kernel<<<grid, kAttnWarps * 32, plan.smem_bytes, stream>>>(p, plan.num_splits, err);
    return cudaGetLastError();
}

template <int HD, typename CacheT>
cudaError_t launch_rows(const AttentionParams& p, const AttentionPlan& plan, KernelError* err, cudaStream_t stream) {
    return plan.rows_per_warp == 2 ? launch_instance<HD, 2, CacheT>(p, plan, err, stream)
                                   : launch_instance<HD, 4, CacheT>(p, plan, err, stream);
}

template <typename CacheT>
cudaError_t launch_typed(const AttentionParams& p, const AttentionPlan& plan, KernelError* err, cudaStream_t stream) {
    switch (plan.head_dim_bucket) {
        case 32:
            return launch_rows<32, CacheT>(p, plan, err, stream);
        case 64:
            return launch_rows<64, CacheT>(p, plan, err, stream);
        case 128:
            return launch_rows<128, CacheT>(p, plan, err, stream);
        case 256:
            return launch_rows<256, CacheT>(p, plan, err, stream);
        default:
            return cudaErrorInvalidValue;
    }
}

}  // namespace

cudaError_t launch_attention(const AttentionParams& p, ElemType cache_type, const AttentionPlan& plan, KernelError* err,
                             cudaStream_t stream) {
    if (p.num_seqs == 0) return cudaSuccess;
    if (plan.rows_per_warp != 2 && plan.rows_per_warp != 4) return cudaErrorInvalidValue;
    if (plan.num_splits > 1 && p.partials == nullptr) return cudaErrorInvalidValue;
    const cudaError_t e = cache_type == ElemType::kF32 ? launch_typed<float>(p, plan, err, stream)
                                                       : launch_typed<__nv_bfloat16>(p, plan, err, stream);
    if (e != cudaSuccess || plan.num_splits == 1) return e;
    const int64_t rows = p.num_tokens * p.num_q_heads;
    if (rows == 0) return cudaSuccess;
    attention_combine_kernel<<<grid_for(rows, 1), threads_for_row(p.head_dim, 1, 256), 0, stream>>>(
        p.partials, p.out, rows, p.head_dim, plan.num_splits, p.sinks, p.num_q_heads);
    return cudaGetLastError();
}

}  // namespace moe::kernels
