// Weighted combine of the experts' rows back into token order.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/common/kernel_types.h"

namespace moe::kernels {

// y[t] (+)= sum_j topk_weights[t, j] * out_permuted[row_of[t * top_k + j]] in slot order j.
// out_permuted [num_rows, H], y [T, H], f32 contiguous. A row_of entry outside [0, num_rows) is
// skipped and recorded in `err` (row = pair index). Asynchronous on `stream`.
cudaError_t launch_moe_unpermute(const float* out_permuted, const int32_t* row_of, const float* topk_weights, float* y,
                                 int64_t num_tokens, int64_t top_k, int64_t hidden, int64_t num_rows, bool accumulate,
                                 KernelError* err, cudaStream_t stream);

}  // namespace moe::kernels
