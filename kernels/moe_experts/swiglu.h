// SwiGLU between the expert GEMMs: out = silu(gate) * up over [rows, cols] contiguous f32, written
// as f32 or (for the bf16 down projection) bf16 rounded to nearest even.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/common/kernel_types.h"

namespace moe::kernels {

cudaError_t launch_swiglu(const float* gate, const float* up, void* out, ElemType out_type, int64_t n,
                          cudaStream_t stream);

}  // namespace moe::kernels
