// The CUDA backend's public face: its factory. This header is CUDA-free so that any host code
// built with MOE_WITH_CUDA (the CLI) can include it; the factory is defined only when the build
// has CUDA enabled (target moe_cuda), so call it under MOE_WITH_CUDA.
//
// Usage from host code:
//   #include "moe/cuda_backend.h"
//   ...
//   auto be = moe::make_cuda_backend(device_index);
//   if (!be.ok()) { /* be.status(): kUnavailable "no CUDA device: ..." when no GPU answers */ }
#pragma once

#include <memory>

#include "moe/backend.h"
#include "moe/status.h"

namespace moe {

// A Backend on CUDA device `device`: memory through cudaMalloc/cudaFree, one non-blocking stream
// on which every copy and op is queued, one cuBLAS handle bound to it. Ops run asynchronously;
// copy() and synchronize() wait for the stream. Ops whose kernels check indices (embedding,
// kv_write) wait too, to report a bad index as kOutOfRange before returning.
//
// Errors: kUnavailable "no CUDA device: <reason>" when cudaGetDeviceCount fails or finds none
// (no driver, no GPU); kInvalidArgument when `device` is not one of the devices present;
// kResourceExhausted / kInternal when the stream or cuBLAS handle cannot be created.
StatusOr<std::unique_ptr<Backend>> make_cuda_backend(int device = 0);

}  // namespace moe
