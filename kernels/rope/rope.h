// Rotary position embedding launcher ("rotate half" / GPT-NeoX layout), in place on q and k.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/common/kernel_types.h"

namespace moe::kernels {

struct RopeParams {
    int64_t num_tokens = 0;
    int64_t num_q_heads = 0;
    int64_t num_kv_heads = 0;
    int64_t head_dim = 0;
    int64_t rotary_dim = 0;  // even, <= head_dim
    float theta = 10000.0f;
    const float* inv_freq = nullptr;  // [rotary_dim / 2] (YaRN) or null: theta^(-2i/rotary_dim)
    float attention_factor = 1.0f;    // with inv_freq: cos and sin scaled by it
};

// q: [num_tokens, num_q_heads, head_dim], k: [num_tokens, num_kv_heads, head_dim], both contiguous
// f32, rotated in place; positions: [num_tokens] i32, >= 0 (a negative position leaves its token
// untouched and is recorded in `err`, which may be null). Asynchronous on `stream`.
cudaError_t launch_rope(float* q, float* k, const int32_t* positions, const RopeParams& params, KernelError* err,
                        cudaStream_t stream);

}  // namespace moe::kernels
