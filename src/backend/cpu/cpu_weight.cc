#include "backend/cpu/cpu_weight.h"

#include <utility>

namespace moe::cpu {

const char* layout_name(CpuLayout layout) {
    switch (layout) {
        case CpuLayout::kRowMajor:
            return "row-major";
        case CpuLayout::kPanels:
            return "bf16 column panels";
        case CpuLayout::kPanels12:
            return "lossless 12-bit panels";
        case CpuLayout::kFp8Block:
            return "fp8 e4m3 block-scaled";
        case CpuLayout::kMxfp4:
            return "mxfp4";
    }
    return "?";
}

CpuMatrix cpu_matrix(const WeightView& w) {
    // NOTE: the CPU backend makes no other PreparedWeight, and ops::run refuses a handle made by
    // another backend, so the downcast is safe.
    if (w.prepared != nullptr) return static_cast<const CpuWeight*>(w.prepared)->matrix();
    return CpuMatrix{.layout = CpuLayout::kRowMajor,
                     .dtype = w.tensor.dtype,
                     .n = w.tensor.ndim > 0 ? w.dim(0) : 1,
                     .k = w.tensor.ndim > 1 ? w.dim(1) : 1,
                     .data = w.tensor.data};
}

CpuWeight::CpuWeight(const Backend& backend, const TensorView& logical, const CpuMatrix& matrix, DeviceBuffer buffer,
                     CpuWeightCounts* counts)
    : PreparedWeight(backend, logical, buffer.size()), matrix_(matrix), buffer_(std::move(buffer)), counts_(counts) {
    counts_->matrices[static_cast<size_t>(matrix_.layout)].fetch_add(1, std::memory_order_relaxed);
    counts_->bytes.fetch_add(static_cast<int64_t>(bytes()), std::memory_order_relaxed);
}

CpuWeight::~CpuWeight() {
    counts_->matrices[static_cast<size_t>(matrix_.layout)].fetch_sub(1, std::memory_order_relaxed);
    counts_->bytes.fetch_sub(static_cast<int64_t>(bytes()), std::memory_order_relaxed);
}

}  // namespace moe::cpu
