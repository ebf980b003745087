// The CPU backend's prepared weights (Backend::prepare_weight): which layout a matrix is in,
// and where. Every kernel that multiplies by a weight gets a CpuMatrix and dispatches on its
// layout in one place (matmul_block.h); nothing outside src/backend/cpu sees these types.
#pragma once

#include <atomic>
#include <cstdint>

#include "moe/backend.h"
#include "moe/dtype.h"

namespace moe::cpu {

// The forms a CPU matrix can take. A new format (int8 or FP8 with block scales, MXFP4) is a new
// value here, its packing in CpuBackend::prepare_weight and its block kernel in matmul_block.cc.
enum class CpuLayout : uint8_t {
    kRowMajor,  // the checkpoint's [n, k] rows, f32 or bf16
    kPanels,    // bf16 column panels (bf16_panels.h)
    kPanels12,  // their lossless 12-bit form (bf16_panels.h)
    kFp8Block,  // FP8 e4m3 with f32 block scales, as the checkpoint stores it (#20; moe/quant.h)
    kMxfp4,     // MXFP4: e2m1 blocks of 32 with e8m0 scales, as the checkpoint stores it (#24)
};
inline constexpr int kNumCpuLayouts = 5;

const char* layout_name(CpuLayout layout);

// A matrix w [n, k] as the CPU kernels read it, for y = x * w^T.
struct CpuMatrix {
    CpuLayout layout = CpuLayout::kRowMajor;
    DType dtype = DType::kF32;  // kRowMajor: f32 or bf16; the panel forms: bf16
    int64_t n = 0, k = 0;
    const void* data = nullptr;
    // kFp8Block: f32 scales [ceil(n / block_n), ceil(k / block_k)]; kMxfp4: e8m0 bytes [n, k / 32]
    // (block 1 x 32). Null and 0 for the other layouts.
    const void* scales = nullptr;
    int64_t block_n = 0, block_k = 0;

    bool panels() const { return layout == CpuLayout::kPanels || layout == CpuLayout::kPanels12; }
    bool quantized() const { return layout == CpuLayout::kFp8Block || layout == CpuLayout::kMxfp4; }
};

// The matrix an op's weight names: its prepared form when it has one (made by the CPU backend:
// ops::run checked), else its plain row-major tensor.
CpuMatrix cpu_matrix(const WeightView& w);

// What the CPU backend holds for its live prepared weights, per layout (CpuBackend keeps one;
// weights count themselves in and out, from any thread).
struct CpuWeightCounts {
    std::atomic<int64_t> matrices[kNumCpuLayouts] = {0, 0, 0, 0, 0};
    std::atomic<int64_t> bytes{0};
};

class CpuWeight final : public PreparedWeight {
public:
    // buffer holds `matrix` (matrix.data points into it); logical.data is null for the panel forms.
    CpuWeight(const Backend& backend, const TensorView& logical, const CpuMatrix& matrix, DeviceBuffer buffer,
              CpuWeightCounts* counts);
    ~CpuWeight() override;

    const CpuMatrix& matrix() const { return matrix_; }

private:
    CpuMatrix matrix_;
    DeviceBuffer buffer_;
    CpuWeightCounts* counts_;
};

}  // namespace moe::cpu
