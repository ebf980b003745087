// Embedding gather. One block per token row (grid-stride over rows): the id is read once, then
// the row is copied with coalesced loads. Memory-bound: reads T*H table elements, writes T*H f32.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "kernels/common/device_utils.cuh"

namespace moe::kernels {

template <typename TableT>
__global__ void embedding_kernel(const int32_t* __restrict__ ids, const TableT* __restrict__ table,
                                 float* __restrict__ out, int64_t num_tokens, int64_t vocab, int64_t hidden,
                                 KernelError* err) {
    for (int64_t t = blockIdx.x; t < num_tokens; t += gridDim.x) {
        const int64_t id = ids[t];
        float* dst = out + t * hidden;
        if (id < 0 || id >= vocab) {
            // NOTE: never read past the table; leave a defined (zero) row and report the token.
            for (int64_t h = threadIdx.x; h < hidden; h += blockDim.x) dst[h] = 0.0f;
            if (threadIdx.x == 0) report_bad_row(err, t);
            continue;
        }
        const TableT* src = table + id * hidden;
        for (int64_t h = threadIdx.x; h < hidden; h += blockDim.x) dst[h] = load_as_f32(src, h);
    }
}

// f32 rows whose length is a multiple of 4 (and 16-byte aligned base pointers): float4 copies.
__global__ void embedding_f32x4_kernel(const int32_t* __restrict__ ids, const float4* __restrict__ table,
                                       float4* __restrict__ out, int64_t num_tokens, int64_t vocab, int64_t hidden4,
                                       KernelError* err) {
    for (int64_t t = blockIdx.x; t < num_tokens; t += gridDim.x) {
        const int64_t id = ids[t];
        float4* dst = out + t * hidden4;
        if (id < 0 || id >= vocab) {
            for (int64_t h = threadIdx.x; h < hidden4; h += blockDim.x) dst[h] = make_float4(0.f, 0.f, 0.f, 0.f);
            if (threadIdx.x == 0) report_bad_row(err, t);
            continue;
        }
        const float4* src = table + id * hidden4;
        for (int64_t h = threadIdx.x; h < hidden4; h += blockDim.x) dst[h] = src[h];
    }
}

}  // namespace moe::kernels
