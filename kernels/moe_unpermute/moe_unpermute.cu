#include "kernels/common/launch.h"
#include "kernels/moe_unpermute/moe_unpermute.cuh"
#include "kernels/moe_unpermute/moe_unpermute.h"

namespace moe::kernels {

cudaError_t launch_moe_unpermute(const float* out_permuted, const int32_t* row_of, const float* topk_weights, float* y,
                                 int64_t num_tokens, int64_t top_k, int64_t hidden, int64_t num_rows, bool accumulate,
                                 KernelError* err, cudaStream_t stream) {
    if (num_tokens == 0 || hidden == 0) return cudaSuccess;
    moe_unpermute_kernel<<<grid_for(num_tokens, 1), threads_for_row(hidden, 1, 256), 0, stream>>>(
        out_permuted, row_of, topk_weights, y, num_tokens, top_k, hidden, num_rows, accumulate, err);
    return cudaGetLastError();
}

}  // namespace moe::kernels
