#include "moe/cuda_backend.h"

#include <fmt/format.h>

#include <algorithm>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_mxfp4.h"
#include "core/logging.h"

namespace moe {

namespace cuda {

CudaBackend::CudaBackend(int device) : device_(device) {
    register_cuda_ops(ops_);
}

StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::create(int device) {
    std::unique_ptr<CudaBackend> be(new CudaBackend(device));
    MOE_RETURN_IF_ERROR(be->activate());
    MOE_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&be->stream_, cudaStreamNonBlocking));
    MOE_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&be->num_sms_, cudaDevAttrMultiProcessorCount, device));
    MOE_CUDA_RETURN_IF_ERROR(cublasCreate(&be->cublas_));
    MOE_CUDA_RETURN_IF_ERROR(cublasSetStream(be->cublas_, be->stream_));
    // NOTE: f32 GEMMs stay in f32 (no TF32 tensor-op shortcut), so they match the reference at
    // f32 tolerances; bf16 weights go through bf16 tensor cores with f32 accumulation instead.
    MOE_CUDA_RETURN_IF_ERROR(cublasSetMathMode(be->cublas_, CUBLAS_DEFAULT_MATH));
    MOE_CUDA_RETURN_IF_ERROR(cudaMalloc(reinterpret_cast<void**>(&be->error_dev_), sizeof(kernels::KernelError)));
    MOE_CUDA_RETURN_IF_ERROR(cudaMallocHost(reinterpret_cast<void**>(&be->error_host_), sizeof(kernels::KernelError)));
    return be;
}

CudaBackend::~CudaBackend() {
    // Errors here cannot be reported; the device may already be gone (e.g. after a sticky error).
    (void)cudaSetDevice(device_);
    if (stream_ != nullptr) (void)cudaStreamSynchronize(stream_);
    if (scratch_ != nullptr) (void)cudaFree(scratch_);
    if (error_dev_ != nullptr) (void)cudaFree(error_dev_);
    if (error_host_ != nullptr) (void)cudaFreeHost(error_host_);
    if (cublas_ != nullptr) (void)cublasDestroy(cublas_);
    if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
}

StatusOr<std::unique_ptr<PreparedWeight>> CudaBackend::prepare_quantized_weight(const std::string& name,
                                                                                const QuantizedTensor& q,
                                                                                WeightUse use) {
    MOE_RETURN_IF_ERROR(validate_quantized(q, name));
    if (q.format == QuantFormat::kMxfp4) {
        MOE_RETURN_IF_ERROR(activate());
        return prepare_mxfp4(*this, name, q);
    }
    if (q.format != QuantFormat::kFp8E4M3Block) return Backend::prepare_quantized_weight(name, q, use);
    const size_t value_bytes = q.values.nbytes(), scale_offset = (value_bytes + 255) / 256 * 256;
    MOE_ASSIGN_OR_RETURN(DeviceBuffer buf, DeviceBuffer::allocate(*this, scale_offset + q.scales.nbytes()));
    auto* base = static_cast<uint8_t*>(buf.data());
    MOE_RETURN_IF_ERROR(
        copy(base, device(), q.values.data, Device{}, value_bytes).with_context("prepare_quantized_weight " + name));
    MOE_RETURN_IF_ERROR(copy(base + scale_offset, device(), q.scales.data, Device{}, q.scales.nbytes())
                            .with_context("prepare_quantized_weight " + name));
    const TensorView logical = TensorView::make(nullptr, DType::kBF16, {q.n, q.k}, device());
    return std::unique_ptr<PreparedWeight>(
        std::make_unique<CudaFp8Weight>(*this, logical, std::move(buf), scale_offset, q.block_n, q.block_k));
}

Status CudaBackend::activate() const {
    MOE_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
    return ok_status();
}

StatusOr<void*> CudaBackend::allocate(size_t bytes) {
    MOE_RETURN_IF_ERROR(activate());
    void* p = nullptr;
    // cudaMalloc aligns to 256 bytes; a zero-byte request still gets a real pointer (the
    // Backend contract: never null on OK).
    const Status s = cuda_call_status(cudaMalloc(&p, std::max<size_t>(bytes, 1)), __FILE__, __LINE__, "cudaMalloc");
    if (!s.ok()) return s.with_context(fmt::format("allocating {} bytes on cuda:{}", bytes, device_));
    return p;
}

void CudaBackend::deallocate(void* ptr) {
    if (ptr == nullptr) return;
    (void)cudaSetDevice(device_);
    // NOTE: cudaFree waits for the device, so queued work still using `ptr` finishes first.
    (void)cudaFree(ptr);
}

Status CudaBackend::copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
    if (bytes == 0) return ok_status();
    const Device self = device();
    for (const Device& d : {dst_device, src_device}) {
        if (d.kind == DeviceKind::kCuda && d != self) {
            return invalid_argument(
                fmt::format("cuda backend on {} cannot copy to or from {}", self.to_string(), d.to_string()));
        }
    }
    const bool dst_dev = dst_device.kind == DeviceKind::kCuda;
    const bool src_dev = src_device.kind == DeviceKind::kCuda;
    const cudaMemcpyKind kind = dst_dev ? (src_dev ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                                        : (src_dev ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
    MOE_RETURN_IF_ERROR(activate());
    MOE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, bytes, kind, stream_));
    MOE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    return ok_status();
}

Status CudaBackend::synchronize() {
    MOE_RETURN_IF_ERROR(activate());
    MOE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    return ok_status();
}

StatusOr<void*> CudaBackend::scratch(size_t bytes) {
    if (bytes <= scratch_bytes_ && scratch_ != nullptr) return scratch_;
    MOE_RETURN_IF_ERROR(activate());
    MOE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    if (scratch_ != nullptr) {
        MOE_CUDA_RETURN_IF_ERROR(cudaFree(scratch_));
        scratch_ = nullptr;
        scratch_bytes_ = 0;
    }
    // Grow geometrically so that a slowly rising batch size does not reallocate every step.
    const size_t want = std::max(bytes, scratch_bytes_ * 2);
    const Status s = cuda_call_status(cudaMalloc(&scratch_, want), __FILE__, __LINE__, "cudaMalloc(scratch)");
    if (!s.ok()) {
        scratch_ = nullptr;
        return s.with_context(fmt::format("allocating {} bytes of scratch on cuda:{}", want, device_));
    }
    scratch_bytes_ = want;
    return scratch_;
}

StatusOr<MemoryInfo> CudaBackend::memory_info() const {
    MOE_RETURN_IF_ERROR(activate());
    size_t free_bytes = 0, total_bytes = 0;
    MOE_CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free_bytes, &total_bytes));
    return MemoryInfo{.total_bytes = static_cast<int64_t>(total_bytes),
                      .available_bytes = static_cast<int64_t>(free_bytes)};
}

Status CudaBackend::reset_kernel_error() {
    MOE_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(error_dev_, 0, sizeof(kernels::KernelError), stream_));
    return ok_status();
}

StatusOr<kernels::KernelError> CudaBackend::read_kernel_error() {
    MOE_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(error_host_, error_dev_, sizeof(kernels::KernelError), cudaMemcpyDeviceToHost, stream_));
    MOE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    return *error_host_;
}

}  // namespace cuda

StatusOr<std::unique_ptr<Backend>> make_cuda_backend(int device) {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    // Any error here (no driver, driver too old, no device) means "no usable GPU".
    if (err != cudaSuccess) return unavailable(fmt::format("no CUDA device: {}", cudaGetErrorString(err)));
    if (count == 0) return unavailable("no CUDA device: cudaGetDeviceCount found 0 devices");
    if (device < 0 || device >= count) {
        return invalid_argument(fmt::format("CUDA device {} requested, {} present (0..{})", device, count, count - 1));
    }
    MOE_ASSIGN_OR_RETURN(std::unique_ptr<cuda::CudaBackend> be, cuda::CudaBackend::create(device));
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, device) == cudaSuccess) {
        log::get("cuda")->info("cuda:{}: {} (sm_{}{}, {} MiB)", device, prop.name, prop.major, prop.minor,
                               prop.totalGlobalMem >> 20);
    }
    return std::unique_ptr<Backend>(std::move(be));
}

}  // namespace moe
