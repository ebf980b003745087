#include "kernels/common/launch.h"
#include "kernels/rms_norm/rms_norm.cuh"
#include "kernels/rms_norm/rms_norm.h"

namespace moe::kernels {

cudaError_t launch_rms_norm(const float* x, int64_t x_stride, const float* weight, float* out, int64_t out_stride,
                            int64_t rows, int64_t dim, float eps, cudaStream_t stream) {
    if (rows == 0 || dim == 0) return cudaSuccess;
    // Four elements per thread per step keeps enough loads in flight without idle threads on
    // small rows; 512 threads cap the block for the 4K-8K hidden sizes of MoE models.
    const int threads = threads_for_row(dim, 4, 512);
    rms_norm_kernel<<<grid_for(rows, 1), threads, 0, stream>>>(x, x_stride, weight, out, out_stride, rows, dim, eps);
    return cudaGetLastError();
}

}  // namespace moe::kernels
