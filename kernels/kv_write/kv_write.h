// Paged KV-cache write launcher.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/common/kernel_types.h"

namespace moe::kernels {

// k, v: [num_tokens, row] f32 contiguous (row = num_kv_heads * head_dim); slot_mapping:
// [num_tokens] i64; k_cache, v_cache: [num_slots, row] contiguous (num_slots = num_blocks *
// block_size), f32 or bf16 (rounded to nearest even). Slot -1 skips the token; any other slot
// outside [0, num_slots) skips it too and is recorded in `err` (may be null). Asynchronous.
cudaError_t launch_kv_write(const float* k, const float* v, const int64_t* slot_mapping, void* k_cache, void* v_cache,
                            ElemType cache_type, int64_t num_tokens, int64_t row, int64_t num_slots, KernelError* err,
                            cudaStream_t stream);

}  // namespace moe::kernels
