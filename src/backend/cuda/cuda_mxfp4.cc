#include "backend/cuda/cuda_mxfp4.h"

#include <fmt/format.h>

#include <utility>

#include "backend/cuda/cuda_check.h"
#include "kernels/moe_experts/expert_bias_act.h"
#include "kernels/moe_experts/swiglu.h"
#include "kernels/mxfp4/mxfp4_gemm.h"

namespace moe::cuda {

StatusOr<std::unique_ptr<PreparedWeight>> prepare_mxfp4(CudaBackend& be, const std::string& name,
                                                        const QuantizedTensor& q) {
    MOE_RETURN_IF_ERROR(check_mxfp4_finite(q, name));
    const size_t value_bytes = q.values.nbytes(), scale_bytes = q.scales.nbytes();
    MOE_ASSIGN_OR_RETURN(DeviceBuffer buf, DeviceBuffer::allocate(be, value_bytes + scale_bytes));
    auto* dst = static_cast<uint8_t*>(buf.data());
    MOE_RETURN_IF_ERROR(be.copy(dst, be.device(), q.values.data, Device{}, value_bytes));
    MOE_RETURN_IF_ERROR(be.copy(dst + value_bytes, be.device(), q.scales.data, Device{}, scale_bytes));
    TensorView logical = TensorView::make(nullptr, DType::kBF16, {q.n, q.k}, be.device());
    return std::unique_ptr<PreparedWeight>(std::make_unique<CudaMxfp4Weight>(be, logical, std::move(buf), value_bytes));
}

namespace {

cudaError_t launch(CudaBackend& be, const CudaMxfp4Weight& w, const float* x, int64_t ldx, float* y, int64_t ldy,
                   int64_t m, bool accumulate) {
    kernels::Mxfp4GemmParams p;
    p.x = x;
    p.x_type = kernels::ElemType::kF32;
    p.ldx = ldx;
    p.values = w.values();
    p.scales = w.scales();
    p.y = y;
    p.ldy = ldy;
    p.m = m;
    p.n = w.logical().dim(0);
    p.k = w.logical().dim(1);
    p.accumulate = accumulate;
    return kernels::launch_mxfp4_gemm(p, be.stream());
}

}  // namespace

Status mxfp4_gemm(CudaBackend& be, const GemmArgs& a, const CudaMxfp4Weight& w) {
    const int64_t m = a.x.dim(0);
    const int64_t ldx = m > 1 ? a.x.stride(0) : a.x.dim(1), ldy = m > 1 ? a.y.stride(0) : a.y.dim(1);
    MOE_CUDA_RETURN_IF_ERROR(launch(be, w, a.x.ptr<const float>(), ldx, a.y.ptr<float>(), ldy, m, a.accumulate));
    return ok_status();
}

Status mxfp4_moe_experts(CudaBackend& be, const MoeExpertsArgs& a, const std::vector<kernels::ExpertGemm>& gemms,
                         int64_t inter) {
    const int64_t rows = a.x_permuted.dim(0), hidden = a.x_permuted.dim(1);
    std::vector<const CudaMxfp4Weight*> wg, wu, wd;
    for (const kernels::ExpertGemm& g : gemms) {
        const size_t e = static_cast<size_t>(g.expert);
        wg.push_back(as_mxfp4(a.w_gate[e]));
        wu.push_back(as_mxfp4(a.w_up[e]));
        wd.push_back(as_mxfp4(a.w_down[e]));
        if (wg.back() == nullptr || wu.back() == nullptr || wd.back() == nullptr)
            return unimplemented(
                fmt::format("moe_experts: expert {} mixes MXFP4 and other weights; the CUDA backend needs one form "
                            "for every expert",
                            g.expert));
    }
    const kernels::ExpertsScratch layout = kernels::plan_experts_scratch(rows, hidden, inter, false);
    MOE_ASSIGN_OR_RETURN(void* scratch_ptr, be.scratch(layout.total));
    char* scratch = static_cast<char*>(scratch_ptr);
    auto* gate = reinterpret_cast<float*>(scratch + layout.gate);
    auto* up = reinterpret_cast<float*>(scratch + layout.up);
    const float* x = a.x_permuted.ptr<const float>();
    for (size_t i = 0; i < gemms.size(); ++i) {
        const kernels::ExpertGemm& g = gemms[i];
        MOE_CUDA_RETURN_IF_ERROR(
            launch(be, *wg[i], x + g.row_begin * hidden, hidden, gate + g.row_begin * inter, inter, g.rows, false));
        MOE_CUDA_RETURN_IF_ERROR(
            launch(be, *wu[i], x + g.row_begin * hidden, hidden, up + g.row_begin * inter, inter, g.rows, false));
    }
    // The activation as the bf16/f32 route computes it (cuda_moe_ops.cc), in f32 in place of gate:
    // plain SwiGLU in one launch, biases or the clamped SwiGLU (gpt-oss) per running expert.
    if (a.activation == ExpertActivation::kSwiGLU && a.b_gate.empty() && a.b_up.empty()) {
        MOE_CUDA_RETURN_IF_ERROR(
            kernels::launch_swiglu(gate, up, gate, kernels::ElemType::kF32, rows * inter, be.stream()));
    } else {
        for (const kernels::ExpertGemm& g : gemms) {
            const size_t e = static_cast<size_t>(g.expert);
            const int64_t at = g.row_begin * inter;
            MOE_CUDA_RETURN_IF_ERROR(kernels::launch_expert_bias_act(
                gate + at, up + at, a.b_gate.empty() ? nullptr : a.b_gate[e].ptr<const float>(),
                a.b_up.empty() ? nullptr : a.b_up[e].ptr<const float>(), gate + at, kernels::ElemType::kF32, g.rows,
                inter, a.activation == ExpertActivation::kClampedSwiGLU, a.swiglu_alpha, a.swiglu_limit, be.stream()));
        }
    }
    for (size_t i = 0; i < gemms.size(); ++i) {
        const kernels::ExpertGemm& g = gemms[i];
        float* out = a.out_permuted.ptr<float>() + g.row_begin * hidden;
        MOE_CUDA_RETURN_IF_ERROR(launch(be, *wd[i], gate + g.row_begin * inter, inter, out, hidden, g.rows, false));
        if (!a.b_down.empty())
            MOE_CUDA_RETURN_IF_ERROR(kernels::launch_add_bias_rows(
                out, a.b_down[static_cast<size_t>(g.expert)].ptr<const float>(), g.rows, hidden, hidden, be.stream()));
    }
    return ok_status();
}

}  // namespace moe::cuda
