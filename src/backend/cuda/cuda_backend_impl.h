// CudaBackend: private to src/backend/cuda. The op adapters (cuda_ops.cc) reach the stream, the
// cuBLAS handle, scratch memory and the kernel error block through it.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <memory>
#include <string>
#include <utility>

#include "kernels/common/kernel_types.h"
#include "moe/backend.h"
#include "moe/status.h"
#include "moe/tensor.h"

namespace moe::cuda {

class CudaBackend final : public Backend {
public:
    // Creates the stream, the cuBLAS handle and the error block on `device` (which must exist).
    static StatusOr<std::unique_ptr<CudaBackend>> create(int device);
    ~CudaBackend() override;

    const char* name() const override { return "cuda"; }
    Device device() const override { return Device{DeviceKind::kCuda, device_}; }

    StatusOr<void*> allocate(size_t bytes) override;
    void deallocate(void* ptr) override;
    Status copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) override;
    Status synchronize() override;
    // cudaMemGetInfo on this device: its total memory and what is free now.
    StatusOr<MemoryInfo> memory_info() const override;
    // FP8 e4m3 block-scaled (#20): a device copy of the values (1 byte per weight) and the f32
    // scales, as a CudaFp8Weight; gemm and moe_experts multiply by it with the block-scaled
    // kernel (kernels/fp8_gemm). MXFP4 (#24): kept as the checkpoint stores it (cuda_mxfp4.h).
    StatusOr<std::unique_ptr<PreparedWeight>> prepare_quantized_weight(const std::string& name,
                                                                       const QuantizedTensor& q,
                                                                       WeightUse use) override;

    // Makes this backend's device current on the calling thread (cheap after the first call).
    Status activate() const;
    cudaStream_t stream() const { return stream_; }
    cublasHandle_t cublas() const { return cublas_; }
    // Streaming multiprocessors of the device, for launch plans that size grids in waves.
    int num_sms() const { return num_sms_; }

    // Device memory of at least `bytes`, valid until the next scratch() call. Grows (after waiting
    // for the stream, since queued work may still read the old buffer) and never shrinks.
    StatusOr<void*> scratch(size_t bytes);

    // The device-side error block for index-checking kernels: zeroed on the stream by
    // reset_kernel_error(); read_kernel_error() waits for the stream and returns its contents.
    kernels::KernelError* kernel_error() const { return error_dev_; }
    Status reset_kernel_error();
    StatusOr<kernels::KernelError> read_kernel_error();

private:
    explicit CudaBackend(int device);

    int device_ = 0;
    int num_sms_ = 1;
    cudaStream_t stream_ = nullptr;
    cublasHandle_t cublas_ = nullptr;
    kernels::KernelError* error_dev_ = nullptr;
    kernels::KernelError* error_host_ = nullptr;  // pinned
    void* scratch_ = nullptr;
    size_t scratch_bytes_ = 0;
};

// An FP8 block-scaled matrix in device memory: values [n, k] e4m3 then, 256-byte aligned, the f32
// scales [ceil(n / block_n), ceil(k / block_k)]. logical() is [n, k] bf16 without data.
class CudaFp8Weight final : public PreparedWeight {
public:
    CudaFp8Weight(const Backend& backend, const TensorView& logical, DeviceBuffer buffer, size_t scale_offset,
                  int64_t block_n, int64_t block_k)
        : PreparedWeight(backend, logical, buffer.size()),
          buffer_(std::move(buffer)),
          scale_offset_(scale_offset),
          block_n_(block_n),
          block_k_(block_k) {}
    const uint8_t* values() const { return static_cast<const uint8_t*>(buffer_.data()); }
    const float* scales() const {
        return reinterpret_cast<const float*>(static_cast<const uint8_t*>(buffer_.data()) + scale_offset_);
    }
    int64_t block_n() const { return block_n_; }
    int64_t block_k() const { return block_k_; }

private:
    DeviceBuffer buffer_;
    size_t scale_offset_;
    int64_t block_n_, block_k_;
};

// The FP8 form behind a weight view, or null for a plain one.
inline const CudaFp8Weight* fp8_weight(const WeightView& w) {
    return dynamic_cast<const CudaFp8Weight*>(w.prepared);
}

// Fills `table` with the ops that have CUDA kernels (cuda_ops.cc).
void register_cuda_ops(OpTable& table);
// attention and the MoE ops (cuda_moe_ops.cc); called by register_cuda_ops.
void register_cuda_moe_ops(OpTable& table);
// The MLA ops and DeepSeek-V3's grouped router (cuda_mla_ops.cc); called by register_cuda_ops.
void register_cuda_mla_ops(OpTable& table);

}  // namespace moe::cuda
