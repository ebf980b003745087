// One checked-call macro for the CUDA runtime and cuBLAS (NCCL adds an overload of
// cuda_call_status when it lands): a failure becomes a Status naming file:line, the statement
// and the library's own error name and text.
#pragma once

#include <cublas_api.h>
#include <cuda_runtime_api.h>

#include "moe/status.h"

namespace moe::cuda {

// OK for cudaSuccess; otherwise kResourceExhausted for allocation failures, kUnavailable when
// there is no usable device or driver, kInternal for the rest.
Status cuda_call_status(cudaError_t err, const char* file, int line, const char* stmt);
// OK for CUBLAS_STATUS_SUCCESS; kResourceExhausted for ALLOC_FAILED, kUnimplemented for
// NOT_SUPPORTED / ARCH_MISMATCH, kInternal for the rest.
Status cuda_call_status(cublasStatus_t err, const char* file, int line, const char* stmt);

}  // namespace moe::cuda

// Returns a Status from the enclosing function when `stmt` (a cudaError_t or cublasStatus_t
// expression) does not succeed.
#define MOE_CUDA_RETURN_IF_ERROR(stmt) \
    MOE_RETURN_IF_ERROR(::moe::cuda::cuda_call_status((stmt), __FILE__, __LINE__, #stmt))
