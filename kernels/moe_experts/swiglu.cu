#include <cuda_bf16.h>

#include "kernels/common/launch.h"
#include "kernels/moe_experts/swiglu.cuh"
#include "kernels/moe_experts/swiglu.h"

namespace moe::kernels {

cudaError_t launch_swiglu(const float* gate, const float* up, void* out, ElemType out_type, int64_t n,
                          cudaStream_t stream) {
    if (n == 0) return cudaSuccess;
    if (out_type == ElemType::kF32) {
        swiglu_kernel<float><<<grid_for(n, 256), 256, 0, stream>>>(gate, up, static_cast<float*>(out), n);
    } else {
        swiglu_kernel<__nv_bfloat16>
            <<<grid_for(n, 256), 256, 0, stream>>>(gate, up, static_cast<__nv_bfloat16*>(out), n);
    }
    return cudaGetLastError();
}

}  // namespace moe::kernels
