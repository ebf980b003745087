#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "ops/data_checks.h"
#include "ops/ops.h"
#include "ops/ref_util.h"

namespace moe::ref {

Status moe_experts(const MoeExpertsArgs& a) {
    MOE_RETURN_IF_ERROR(ops::validate(a));
    MOE_RETURN_IF_ERROR(ops::check_moe_experts_data(a));
    const int64_t hidden = a.x_permuted.dim(1);
    const auto* off = a.expert_offsets.ptr<const int32_t>();
    std::vector<double> act;
    for (size_t e = 0; e + 1 < static_cast<size_t>(a.expert_offsets.dim(0)); ++e) {
        if (off[e + 1] == off[e]) continue;
        for (const WeightView* w : {&a.w_gate[e], &a.w_up[e], &a.w_down[e]})
            if (w->tensor.data == nullptr)
                return invalid_argument("reference moe_experts: expert " + std::to_string(e) +
                                        " has no plain weight values (only a backend's own form)");
        const int64_t inter = a.w_gate[e].dim(0);
        act.assign(static_cast<size_t>(inter), 0.0);
        for (int64_t r = off[e]; r < off[e + 1]; ++r) {
            const float* x = a.x_permuted.ptr<const float>() + r * hidden;
            for (int64_t i = 0; i < inter; ++i) {
                double g = 0.0, u = 0.0;
                for (int64_t h = 0; h < hidden; ++h) {
                    g += static_cast<double>(x[h]) * load(a.w_gate[e].tensor, i * hidden + h);
                    u += static_cast<double>(x[h]) * load(a.w_up[e].tensor, i * hidden + h);
                }
                if (!a.b_gate.empty()) g += a.b_gate[e].ptr<const float>()[i];
                if (!a.b_up.empty()) u += a.b_up[e].ptr<const float>()[i];
                if (a.activation == ExpertActivation::kSwiGLU) {
                    act[static_cast<size_t>(i)] = g / (1.0 + std::exp(-g)) * u;
                } else {
                    const double limit = a.swiglu_limit, alpha = a.swiglu_alpha;
                    g = std::min(g, limit);
                    u = std::clamp(u, -limit, limit);
                    act[static_cast<size_t>(i)] = (u + 1.0) * g / (1.0 + std::exp(-alpha * g));
                }
            }
            for (int64_t h = 0; h < hidden; ++h) {
                double acc = a.b_down.empty() ? 0.0 : a.b_down[e].ptr<const float>()[h];
                for (int64_t i = 0; i < inter; ++i)
                    acc += act[static_cast<size_t>(i)] * load(a.w_down[e].tensor, h * inter + i);
                a.out_permuted.ptr<float>()[r * hidden + h] = static_cast<float>(acc);
            }
        }
    }
    return ok_status();
}

}  // namespace moe::ref
