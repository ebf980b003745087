#include <cmath>

#include "ops/ops.h"
#include "ops/ref_util.h"

namespace moe::ref {

Status silu_mul(const SiluMulArgs& a) {
    MOE_RETURN_IF_ERROR(ops::validate(a));
    const int64_t cols = a.gate.dim(1);
    for (int64_t r = 0; r < a.gate.dim(0); ++r) {
        for (int64_t c = 0; c < cols; ++c) {
            const double g = at2(a.gate, r, c);
            const double u = at2(a.up, r, c);
            a.out.ptr<float>()[r * cols + c] = static_cast<float>(g / (1.0 + std::exp(-g)) * u);
        }
    }
    return ok_status();
}

}  // namespace moe::ref
