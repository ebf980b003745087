#include <cuda_bf16.h>

#include "kernels/common/launch.h"
#include "kernels/moe_experts/expert_bias_act.cuh"
#include "kernels/moe_experts/expert_bias_act.h"

namespace moe::kernels {

cudaError_t launch_expert_bias_act(const float* gate, const float* up, const float* gate_bias, const float* up_bias,
                                   void* out, ElemType out_type, int64_t rows, int64_t cols, bool clamped, float alpha,
                                   float limit, cudaStream_t stream) {
    const int64_t n = rows * cols;
    if (n == 0) return cudaSuccess;
    if (out_type == ElemType::kF32) {
        expert_bias_act_kernel<float><<<grid_for(n, 256), 256, 0, stream>>>(
            gate, up, gate_bias, up_bias, static_cast<float*>(out), rows, cols, clamped, alpha, limit);
    } else {
        expert_bias_act_kernel<__nv_bfloat16><<<grid_for(n, 256), 256, 0, stream>>>(
            gate, up, gate_bias, up_bias, static_cast<__nv_bfloat16*>(out), rows, cols, clamped, alpha, limit);
    }
    return cudaGetLastError();
}

cudaError_t launch_add_bias_rows(float* y, const float* bias, int64_t rows, int64_t cols, int64_t ldy,
                                 cudaStream_t stream) {
    const int64_t n = rows * cols;
    if (n == 0) return cudaSuccess;
    add_bias_rows_kernel<<<grid_for(n, 256), 256, 0, stream>>>(y, bias, rows, cols, ldy);
    return cudaGetLastError();
}

}  // namespace moe::kernels
