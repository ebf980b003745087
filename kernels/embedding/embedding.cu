#include "kernels/common/launch.h"
#include "kernels/embedding/embedding.cuh"
#include "kernels/embedding/embedding.h"

namespace moe::kernels {

cudaError_t launch_embedding(const int32_t* ids, const void* table, ElemType table_type, float* out, int64_t num_tokens,
                             int64_t vocab, int64_t hidden, KernelError* err, cudaStream_t stream) {
    if (num_tokens == 0 || hidden == 0) return cudaSuccess;
    const unsigned grid = grid_for(num_tokens, 1);
    if (table_type == ElemType::kF32 && hidden % 4 == 0 && is_aligned(table, 16) && is_aligned(out, 16)) {
        const int threads = threads_for_row(hidden / 4, 1, 256);
        embedding_f32x4_kernel<<<grid, threads, 0, stream>>>(
            ids, static_cast<const float4*>(table), reinterpret_cast<float4*>(out), num_tokens, vocab, hidden / 4, err);
    } else if (table_type == ElemType::kF32) {
        const int threads = threads_for_row(hidden, 1, 256);
        embedding_kernel<float>
            <<<grid, threads, 0, stream>>>(ids, static_cast<const float*>(table), out, num_tokens, vocab, hidden, err);
    } else {
        const int threads = threads_for_row(hidden, 1, 256);
        embedding_kernel<__nv_bfloat16><<<grid, threads, 0, stream>>>(ids, static_cast<const __nv_bfloat16*>(table),
                                                                      out, num_tokens, vocab, hidden, err);
    }
    return cudaGetLastError();
}

}  // namespace moe::kernels
