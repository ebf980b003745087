// RoPE: one block per token (grid-stride), one thread per rotation pair i < rotary_dim/2. A thread
// computes its (cos, sin) once and applies it to that pair in every q and kv head of the token.
//
// NOTE: the angle pos * theta^(-2i/rotary_dim) is formed and reduced in double. In f32 its absolute
// error grows with the position (about 2e-3 rad at 32K), which would show as drift against the
// reference at long contexts; one double pow + sincos per (token, pair) is cheap next to the
// 2 * (num_q_heads + num_kv_heads) f32 loads and stores it serves.
#pragma once

#include <cstdint>

#include "kernels/common/device_utils.cuh"
#include "kernels/rope/rope.h"

namespace moe::kernels {

__device__ __forceinline__ void rotate_pair(float* head, int64_t i, int64_t half, float c, float s) {
    const float x0 = head[i];
    const float x1 = head[i + half];
    head[i] = x0 * c - x1 * s;
    head[i + half] = x1 * c + x0 * s;
}

__global__ void rope_kernel(float* __restrict__ q, float* __restrict__ k, const int32_t* __restrict__ positions,
                            RopeParams p, KernelError* err) {
    const int64_t half = p.rotary_dim / 2;
    const double log_theta = log(static_cast<double>(p.theta));
    for (int64_t t = blockIdx.x; t < p.num_tokens; t += gridDim.x) {
        const int32_t position = positions[t];
        if (position < 0) {
            // Leave the token's q and k untouched and report it (the reference rejects it too).
            if (threadIdx.x == 0) report_bad_row(err, t);
            continue;
        }
        const double pos = static_cast<double>(position);
        float* qt = q + t * p.num_q_heads * p.head_dim;
        float* kt = k + t * p.num_kv_heads * p.head_dim;
        for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
            const double inv_freq =
                p.inv_freq != nullptr
                    ? static_cast<double>(p.inv_freq[i])
                    : exp(-log_theta * static_cast<double>(2 * i) / static_cast<double>(p.rotary_dim));
            double s;
            double c;
            sincos(pos * inv_freq, &s, &c);
            const float factor = p.inv_freq != nullptr ? p.attention_factor : 1.0f;
            const float cf = static_cast<float>(c) * factor;
            const float sf = static_cast<float>(s) * factor;
            for (int64_t h = 0; h < p.num_q_heads; ++h) rotate_pair(qt + h * p.head_dim, i, half, cf, sf);
            for (int64_t h = 0; h < p.num_kv_heads; ++h) rotate_pair(kt + h * p.head_dim, i, half, cf, sf);
        }
    }
}

}  // namespace moe::kernels
