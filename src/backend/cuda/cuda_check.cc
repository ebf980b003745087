#include "backend/cuda/cuda_check.h"

#include <fmt/format.h>

namespace moe::cuda {

Status cuda_call_status(cudaError_t err, const char* file, int line, const char* stmt) {
    if (err == cudaSuccess) return ok_status();
    StatusCode code = StatusCode::kInternal;
    switch (err) {
        case cudaErrorMemoryAllocation:
            code = StatusCode::kResourceExhausted;
            break;
        case cudaErrorNoDevice:
        case cudaErrorInsufficientDriver:
        case cudaErrorInvalidDevice:
        case cudaErrorDevicesUnavailable:
            code = StatusCode::kUnavailable;
            break;
        default:
            break;
    }
    return Status(code, fmt::format("{}:{}: {} failed: {} ({})", file, line, stmt, cudaGetErrorName(err),
                                    cudaGetErrorString(err)));
}

Status cuda_call_status(cublasStatus_t err, const char* file, int line, const char* stmt) {
    if (err == CUBLAS_STATUS_SUCCESS) return ok_status();
    StatusCode code = StatusCode::kInternal;
    switch (err) {
        case CUBLAS_STATUS_ALLOC_FAILED:
            code = StatusCode::kResourceExhausted;
            break;
        case CUBLAS_STATUS_NOT_SUPPORTED:
        case CUBLAS_STATUS_ARCH_MISMATCH:
            code = StatusCode::kUnimplemented;
            break;
        default:
            break;
    }
    return Status(code, fmt::format("{}:{}: {} failed: {} ({})", file, line, stmt, cublasGetStatusName(err),
                                    cublasGetStatusString(err)));
}

}  // namespace moe::cuda
