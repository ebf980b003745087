#include "kernels/common/launch.h"
#include "kernels/rope/rope.cuh"
#include "kernels/rope/rope.h"

namespace moe::kernels {

cudaError_t launch_rope(float* q, float* k, const int32_t* positions, const RopeParams& params, KernelError* err,
                        cudaStream_t stream) {
    if (params.num_tokens == 0 || params.rotary_dim < 2) return cudaSuccess;
    const int threads = threads_for_row(params.rotary_dim / 2, 1, 256);
    rope_kernel<<<grid_for(params.num_tokens, 1), threads, 0, stream>>>(q, k, positions, params, err);
    return cudaGetLastError();
}

}  // namespace moe::kernels
