#include <cuda_bf16.h>

#include "kernels/common/launch.h"
#include "kernels/mxfp4/mxfp4_gemm.cuh"
#include "kernels/mxfp4/mxfp4_gemm.h"

namespace moe::kernels {

cudaError_t launch_mxfp4_gemm(const Mxfp4GemmParams& p, cudaStream_t stream) {
    if (p.k <= 0 || p.k % 32 != 0) return cudaErrorInvalidValue;
    if (p.m == 0 || p.n == 0) return cudaSuccess;
    const int64_t row_tiles = ceil_div(p.m, kMxfp4TileRows), col_tiles = ceil_div(p.n, kMxfp4TileCols);
    if (row_tiles > 65535 || col_tiles > 0x7fffffff) return cudaErrorInvalidValue;
    const dim3 grid(static_cast<unsigned>(col_tiles), static_cast<unsigned>(row_tiles));
    if (p.x_type == ElemType::kBF16) {
        mxfp4_gemm_kernel<__nv_bfloat16><<<grid, 256, 0, stream>>>(
            static_cast<const __nv_bfloat16*>(p.x), p.ldx, p.values, p.scales, p.y, p.ldy, p.m, p.n, p.k, p.accumulate);
    } else {
        mxfp4_gemm_kernel<float><<<grid, 256, 0, stream>>>(static_cast<const float*>(p.x), p.ldx, p.values, p.scales,
                                                           p.y, p.ldy, p.m, p.n, p.k, p.accumulate);
    }
    return cudaGetLastError();
}

}  // namespace moe::kernels
