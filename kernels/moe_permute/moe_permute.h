// Deterministic MoE permutation launcher (see moe_permute_plan.h for the algorithm).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/common/kernel_types.h"
#include "kernels/moe_permute/moe_permute_plan.h"

namespace moe::kernels {

// Device scratch the launch needs: counts, their scan, and CUB's temporary storage.
cudaError_t moe_permute_scratch_bytes(const PermutePlan& plan, size_t* bytes);

// x [T, H] f32, topk_ids [T, top_k] i32 -> x_permuted [T * top_k, H], expert_offsets [E + 1],
// row_of / token_of [T * top_k]. A topk id outside [0, E) is recorded in `err` (row = pair index)
// and its pair gets no row. `scratch` holds moe_permute_scratch_bytes(). Asynchronous.
cudaError_t launch_moe_permute(const float* x, const int32_t* topk_ids, int64_t num_tokens, int64_t top_k,
                               int64_t hidden, const PermutePlan& plan, float* x_permuted, int32_t* expert_offsets,
                               int32_t* row_of, int32_t* token_of, void* scratch, size_t scratch_bytes,
                               KernelError* err, cudaStream_t stream);

}  // namespace moe::kernels
