// Router launchers: softmax top-k per token, and the Qwen2-MoE shared-expert gate.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace moe::kernels {

// logits [T, E] f32 contiguous -> topk_ids [T, top_k] i32, topk_weights [T, top_k] f32.
// Ranks by logit (ties: lower id first), weights are softmax probabilities (renormalized over the
// picked ones when `renormalize`). One warp per token. Asynchronous on `stream`.
cudaError_t launch_moe_route(const float* logits, int32_t* topk_ids, float* topk_weights, int64_t num_tokens,
                             int64_t num_experts, int top_k, bool renormalize, cudaStream_t stream);

// y[t, :] += sigmoid(gate_logits[t]) * shared_out[t, :]; all f32 contiguous [T, H] (gate [T]).
cudaError_t launch_moe_shared_gate(const float* gate_logits, const float* shared_out, float* y, int64_t num_tokens,
                                   int64_t hidden, cudaStream_t stream);

}  // namespace moe::kernels
