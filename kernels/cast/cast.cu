#include "kernels/cast/cast.cuh"
#include "kernels/cast/cast.h"
#include "kernels/common/launch.h"

namespace moe::kernels {

cudaError_t launch_cast_f32_to_bf16(const float* x, int64_t x_stride, uint16_t* y, int64_t rows, int64_t cols,
                                    cudaStream_t stream) {
    if (rows == 0 || cols == 0) return cudaSuccess;
    constexpr int kThreads = 256;
    cast_f32_to_bf16_kernel<<<grid_for(rows * cols, kThreads), kThreads, 0, stream>>>(
        x, x_stride, reinterpret_cast<__nv_bfloat16*>(y), rows, cols);
    return cudaGetLastError();
}

}  // namespace moe::kernels
