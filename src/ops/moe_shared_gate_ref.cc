#include <cmath>

#include "ops/ops.h"

namespace moe::ref {

Status moe_shared_gate(const MoeSharedGateArgs& a) {
    MOE_RETURN_IF_ERROR(ops::validate(a));
    const int64_t hidden = a.y.dim(1);
    for (int64_t t = 0; t < a.y.dim(0); ++t) {
        const double gate = 1.0 / (1.0 + std::exp(-static_cast<double>(a.gate_logits.ptr<const float>()[t])));
        for (int64_t h = 0; h < hidden; ++h) {
            float& y = a.y.ptr<float>()[t * hidden + h];
            y = static_cast<float>(y + gate * a.shared_out.ptr<const float>()[t * hidden + h]);
        }
    }
    return ok_status();
}

}  // namespace moe::ref
