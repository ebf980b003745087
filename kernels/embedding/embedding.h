// Embedding lookup launcher: out[t, :] = table[ids[t], :] (f32 or bf16 table, f32 out).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/common/kernel_types.h"

namespace moe::kernels {

// ids: [num_tokens] i32; table: [vocab, hidden] contiguous, f32 or bf16; out: [num_tokens, hidden]
// contiguous f32. An id outside [0, vocab) zero-fills its row and is recorded in `err` (may be
// null), which the caller zeroes before and reads after. Asynchronous on `stream`.
cudaError_t launch_embedding(const int32_t* ids, const void* table, ElemType table_type, float* out, int64_t num_tokens,
                             int64_t vocab, int64_t hidden, KernelError* err, cudaStream_t stream);

}  // namespace moe::kernels
