#include "ops/ops.h"
#include "ops/ref_util.h"

namespace moe::ref {

Status gemm(const GemmArgs& a) {
    MOE_RETURN_IF_ERROR(ops::validate(a));
    if (a.w.tensor.data == nullptr)
        return invalid_argument("reference gemm: w has no plain values (only a backend's own form)");
    const int64_t n_dim = a.w.dim(0);
    const int64_t k_dim = a.w.dim(1);
    for (int64_t m = 0; m < a.x.dim(0); ++m) {
        for (int64_t n = 0; n < n_dim; ++n) {
            double acc = a.accumulate ? at2(a.y, m, n) : 0.0;
            if (!a.bias.empty()) acc += a.bias.ptr<const float>()[n];
            for (int64_t k = 0; k < k_dim; ++k)
                acc += static_cast<double>(at2(a.x, m, k)) * load(a.w.tensor, n * k_dim + k);
            at2(a.y, m, n) = static_cast<float>(acc);
        }
    }
    return ok_status();
}

}  // namespace moe::ref
