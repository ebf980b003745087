#include "kernels/common/launch.h"
#include "kernels/silu_mul/silu_mul.cuh"
#include "kernels/silu_mul/silu_mul.h"

namespace moe::kernels {

cudaError_t launch_silu_mul(const float* gate, int64_t gate_stride, const float* up, int64_t up_stride, float* out,
                            int64_t rows, int64_t cols, cudaStream_t stream) {
    if (rows == 0 || cols == 0) return cudaSuccess;
    constexpr int kThreads = 256;
    silu_mul_kernel<<<grid_for(rows * cols, kThreads), kThreads, 0, stream>>>(gate, gate_stride, up, up_stride, out,
                                                                              rows, cols);
    return cudaGetLastError();
}

}  // namespace moe::kernels
