#include "kernels/add/add.cuh"
#include "kernels/add/add.h"
#include "kernels/common/launch.h"

namespace moe::kernels {

namespace {
constexpr int kThreads = 256;
}  // namespace

cudaError_t launch_add(const float* a, const float* b, float* out, int64_t n, cudaStream_t stream) {
    if (n == 0) return cudaSuccess;
    int64_t done = 0;
    if (is_aligned(a, 16) && is_aligned(b, 16) && is_aligned(out, 16) && n >= 4) {
        const int64_t n4 = n / 4;
        add_f32x4_kernel<<<grid_for(n4, kThreads), kThreads, 0, stream>>>(
            reinterpret_cast<const float4*>(a), reinterpret_cast<const float4*>(b), reinterpret_cast<float4*>(out), n4);
        done = n4 * 4;
    }
    if (done < n) add_kernel<<<grid_for(n - done, kThreads), kThreads, 0, stream>>>(a, b, out, done, n);
    return cudaGetLastError();
}

cudaError_t launch_add_bias_rows(float* y, int64_t y_stride, const float* bias, int64_t rows, int64_t cols,
                                 cudaStream_t stream) {
    if (rows == 0 || cols == 0) return cudaSuccess;
    add_bias_rows_kernel<<<grid_for(rows * cols, kThreads), kThreads, 0, stream>>>(y, y_stride, bias, rows, cols);
    return cudaGetLastError();
}

}  // namespace moe::kernels
