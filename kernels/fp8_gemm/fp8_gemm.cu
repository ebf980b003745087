#include "kernels/common/launch.h"
#include "kernels/fp8_gemm/fp8_gemm.cuh"
#include "kernels/fp8_gemm/fp8_gemm.h"

namespace moe::kernels {

cudaError_t launch_fp8_block_gemm(const float* x, int64_t ldx, const uint8_t* values, const float* scales, int64_t m,
                                  int64_t n, int64_t k, int64_t block_n, int64_t block_k, float* y, int64_t ldy,
                                  bool accumulate, cudaStream_t stream) {
    if (m == 0 || n == 0) return cudaSuccess;
    if (k <= 0 || block_n <= 0 || block_k <= 0) return cudaErrorInvalidValue;
    const int64_t grid_n = ceil_div(n, kFp8TileN), grid_m = ceil_div(m, kFp8TileM);
    // Grid x up to 2^31 - 1 blocks, y up to 65535.
    if (grid_n > 0x7fffffff || grid_m > 65535) return cudaErrorInvalidValue;
    const dim3 grid(static_cast<unsigned>(grid_n), static_cast<unsigned>(grid_m));
    fp8_block_gemm_kernel<<<grid, kFp8Threads, 0, stream>>>(x, ldx, values, scales, m, n, k, block_n, block_k, y, ldy,
                                                            accumulate);
    return cudaGetLastError();
}

}  // namespace moe::kernels
