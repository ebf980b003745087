#include "kernels/common/launch.h"
#include "kernels/moe_route/moe_route.cuh"
#include "kernels/moe_route/moe_route.h"

namespace moe::kernels {

cudaError_t launch_moe_route(const float* logits, int32_t* topk_ids, float* topk_weights, int64_t num_tokens,
                             int64_t num_experts, int top_k, bool renormalize, cudaStream_t stream) {
    if (num_tokens == 0) return cudaSuccess;
    constexpr int kWarpsPerBlock = 4;
    moe_route_kernel<<<grid_for(num_tokens, kWarpsPerBlock), kWarpsPerBlock * 32, 0, stream>>>(
        logits, topk_ids, topk_weights, num_tokens, static_cast<int>(num_experts), top_k, renormalize);
    return cudaGetLastError();
}

cudaError_t launch_moe_shared_gate(const float* gate_logits, const float* shared_out, float* y, int64_t num_tokens,
                                   int64_t hidden, cudaStream_t stream) {
    const int64_t n = num_tokens * hidden;
    if (n == 0) return cudaSuccess;
    moe_shared_gate_kernel<<<grid_for(n, 256), 256, 0, stream>>>(gate_logits, shared_out, y, num_tokens, hidden);
    return cudaGetLastError();
}

}  // namespace moe::kernels
