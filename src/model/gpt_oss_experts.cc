#include "model/gpt_oss_experts.h"

#include <vector>

namespace moe {
namespace {

// `n` values of `src` (dtype t) from element `at` on, as f32.
void read_f32(const WeightRef& src, size_t at, size_t n, float* dst) {
    convert_to_f32(static_cast<const char*>(src.data) + at * dtype_size(src.dtype), src.dtype, dst, n);
}

}  // namespace

Status load_gpt_oss_experts(WeightLoader& wl, const ModelConfig& c, const std::string& prefix,
                            std::span<const int64_t> slot_expert, DType dtype, GptOssExperts* out) {
    const int64_t E = c.num_experts, H = c.hidden_size, I = c.moe_intermediate_size;
    const size_t P = slot_expert.size();
    for (auto* v : {&out->gate, &out->up, &out->down}) v->assign(P, WeightView{});
    for (auto* v : {&out->b_gate, &out->b_up, &out->b_down}) v->assign(P, TensorView{});
    const bool mxfp4 = c.quantization.mxfp4();
    // MXFP4 (the published checkpoints): gate_up_proj_blocks [E, 2I, H/32, 16] + _scales and
    // down_proj_blocks [E, H, I/32, 16] + _scales, rows = output features, gate/up interleaved by
    // rows; WeightLoader::mxfp4_expert reads one expert at a time (below).
    WeightRef gate_up, down;
    if (!mxfp4) {
        MOE_ASSIGN_OR_RETURN(gate_up, wl.source_tensor(prefix + "gate_up_proj", {E, H, 2 * I}));
        MOE_ASSIGN_OR_RETURN(down, wl.source_tensor(prefix + "down_proj", {E, I, H}));
    }
    MOE_ASSIGN_OR_RETURN(const WeightRef gate_up_bias, wl.source_tensor(prefix + "gate_up_proj_bias", {E, 2 * I}));
    MOE_ASSIGN_OR_RETURN(const WeightRef down_bias, wl.source_tensor(prefix + "down_proj_bias", {E, H}));
    const size_t h = static_cast<size_t>(H), i2 = static_cast<size_t>(2 * I), in = static_cast<size_t>(I);
    const size_t dense = mxfp4 ? 0 : in * h;  // no bf16 staging for MXFP4
    std::vector<float> fused(mxfp4 ? 0 : h * i2), g(dense), u(dense), dn(dense), dt(dense);
    std::vector<uint8_t> g_out(dense * dtype_size(dtype)), u_out(g_out.size()), d_out(g_out.size());
    std::vector<float> bias(i2), bg(in), bu(in), bd(h);
    for (size_t s = 0; s < P; ++s) {
        const int64_t e = slot_expert[s];
        if (e < 0) continue;
        if (e >= E) return invalid_argument(prefix + ": slot expert " + std::to_string(e) + " outside [0, E)");
        const size_t ex = static_cast<size_t>(e);
        const std::string name = prefix + std::to_string(e) + ".";
        if (mxfp4) {
            MOE_ASSIGN_OR_RETURN(std::vector<WeightView> gu,
                                 wl.mxfp4_expert(prefix + "gate_up_proj", E, 2 * I, H, e, {{0, 2, I}, {1, 2, I}}));
            MOE_ASSIGN_OR_RETURN(std::vector<WeightView> d,
                                 wl.mxfp4_expert(prefix + "down_proj", E, H, I, e, {{0, 1, H}}));
            out->gate[s] = gu[0];
            out->up[s] = gu[1];
            out->down[s] = d[0];
        } else {
            // gate / up: de-interleave the columns of [H, 2I] and transpose to [I, H].
            read_f32(gate_up, ex * h * i2, h * i2, fused.data());
            for (size_t r = 0; r < h; ++r)
                for (size_t j = 0; j < in; ++j) {
                    g[j * h + r] = fused[r * i2 + 2 * j];
                    u[j * h + r] = fused[r * i2 + 2 * j + 1];
                }
            read_f32(down, ex * in * h, in * h, dn.data());
            for (size_t j = 0; j < in; ++j)
                for (size_t r = 0; r < h; ++r) dt[r * in + j] = dn[j * h + r];
            convert_from_f32(g.data(), g_out.data(), dtype, g.size());
            convert_from_f32(u.data(), u_out.data(), dtype, u.size());
            convert_from_f32(dt.data(), d_out.data(), dtype, dt.size());
            MOE_ASSIGN_OR_RETURN(out->gate[s], wl.matrix_from_host(name + "gate", TensorView::make(g_out.data(), dtype,
                                                                                                   {I, H}, Device{})));
            MOE_ASSIGN_OR_RETURN(
                out->up[s], wl.matrix_from_host(name + "up", TensorView::make(u_out.data(), dtype, {I, H}, Device{})));
            MOE_ASSIGN_OR_RETURN(out->down[s], wl.matrix_from_host(name + "down", TensorView::make(d_out.data(), dtype,
                                                                                                   {H, I}, Device{})));
        }
        read_f32(gate_up_bias, ex * i2, i2, bias.data());
        for (size_t j = 0; j < in; ++j) {
            bg[j] = bias[2 * j];
            bu[j] = bias[2 * j + 1];
        }
        read_f32(down_bias, ex * h, h, bd.data());
        MOE_ASSIGN_OR_RETURN(out->b_gate[s],
                             wl.copy_from_host(TensorView::make(bg.data(), DType::kF32, {I}, Device{})));
        MOE_ASSIGN_OR_RETURN(out->b_up[s], wl.copy_from_host(TensorView::make(bu.data(), DType::kF32, {I}, Device{})));
        MOE_ASSIGN_OR_RETURN(out->b_down[s],
                             wl.copy_from_host(TensorView::make(bd.data(), DType::kF32, {H}, Device{})));
    }
    for (const WeightRef* w : {&gate_up_bias, &down_bias}) wl.release(*w);
    if (!mxfp4)
        for (const WeightRef* w : {&gate_up, &down}) wl.release(*w);
    return ok_status();
}

}  // namespace moe
