// CpuBackend::prepare_mxfp4: an MXFP4 matrix (moe/quant.h) kept as the checkpoint stores it.
//
// Buffer: the values (u8 [n, k / 32, 16]) then the scales (u8 [n, k / 32]), nothing else:
// n * k / 2 + n * k / 32 bytes, 4.25 bits per weight, which PreparedWeight::bytes() reports.
#include <cstring>
#include <utility>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/mxfp4_block.h"

namespace moe::cpu {

StatusOr<std::unique_ptr<PreparedWeight>> CpuBackend::prepare_mxfp4(const std::string& name, const QuantizedTensor& q) {
    // NOTE: validate_quantized ran (prepare_quantized_weight): shapes, dtypes, host memory.
    MOE_RETURN_IF_ERROR(check_mxfp4_finite(q, name));
    const size_t value_bytes = q.values.nbytes(), scale_bytes = q.scales.nbytes();
    MOE_ASSIGN_OR_RETURN(DeviceBuffer buf, DeviceBuffer::allocate(*this, value_bytes + scale_bytes));
    auto* dst = static_cast<uint8_t*>(buf.data());
    std::memcpy(dst, q.values.data, value_bytes);
    std::memcpy(dst + value_bytes, q.scales.data, scale_bytes);
    TensorView logical;
    logical.dtype = DType::kBF16;
    logical.ndim = 2;
    logical.shape[0] = q.n;
    logical.shape[1] = q.k;
    logical.strides[0] = q.k;
    logical.strides[1] = 1;
    logical.data = nullptr;  // the products read the MXFP4 form only
    logical.device = device();
    const CpuMatrix m{.layout = CpuLayout::kMxfp4,
                      .dtype = DType::kBF16,
                      .n = q.n,
                      .k = q.k,
                      .data = dst,
                      .scales = dst + value_bytes,
                      .block_n = 1,
                      .block_k = 32};
    return std::unique_ptr<PreparedWeight>(
        std::make_unique<CpuWeight>(*this, logical, m, std::move(buf), &weight_counts_));
}

}  // namespace moe::cpu
