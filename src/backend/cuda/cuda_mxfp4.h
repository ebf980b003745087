// MXFP4 weights on the CUDA backend (#24): prepared as the checkpoint stores them (values then
// scales in one device buffer, 4.25 bits per weight) and multiplied by kernels/mxfp4 (decoded in
// shared memory), in the gemm op and in moe_experts. Compiled, not executed here (no GPU).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend_impl.h"
#include "kernels/moe_experts/moe_experts_plan.h"
#include "moe/backend.h"
#include "moe/quant.h"
#include "ops/ops.h"

namespace moe::cuda {

class CudaMxfp4Weight final : public PreparedWeight {
public:
    CudaMxfp4Weight(const Backend& backend, const TensorView& logical, DeviceBuffer buffer, size_t value_bytes)
        : PreparedWeight(backend, logical, buffer.size()), buffer_(std::move(buffer)), value_bytes_(value_bytes) {}
    const uint8_t* values() const { return static_cast<const uint8_t*>(buffer_.data()); }
    const uint8_t* scales() const { return values() + value_bytes_; }

private:
    DeviceBuffer buffer_;
    size_t value_bytes_;
};

// w's MXFP4 form when the CUDA backend prepared it so, else null.
inline const CudaMxfp4Weight* as_mxfp4(const WeightView& w) {
    return dynamic_cast<const CudaMxfp4Weight*>(w.prepared);
}

// q (validated, MXFP4) copied to the device; non-finite weights refused (check_mxfp4_finite).
StatusOr<std::unique_ptr<PreparedWeight>> prepare_mxfp4(CudaBackend& be, const std::string& name,
                                                        const QuantizedTensor& q);

// y = x * w^T (+)= for the gemm op over an MXFP4 weight (bias added by the caller).
Status mxfp4_gemm(CudaBackend& be, const GemmArgs& a, const CudaMxfp4Weight& w);

// moe_experts when every running expert's weights are MXFP4: gate and up (f32 x), the activation
// with the biases (gpt-oss's clamped SwiGLU) in f32, down and its bias; the products through the
// MXFP4 kernel. `gemms` are the running experts (host offsets checked).
Status mxfp4_moe_experts(CudaBackend& be, const MoeExpertsArgs& a, const std::vector<kernels::ExpertGemm>& gemms,
                         int64_t inter);

}  // namespace moe::cuda
