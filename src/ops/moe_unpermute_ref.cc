#include "ops/data_checks.h"
#include "ops/ops.h"

namespace moe::ref {

Status moe_unpermute(const MoeUnpermuteArgs& a) {
    MOE_RETURN_IF_ERROR(ops::validate(a));
    MOE_RETURN_IF_ERROR(ops::check_moe_unpermute_data(a));
    const int64_t top_k = a.topk_weights.dim(1);
    const int64_t hidden = a.y.dim(1);
    for (int64_t t = 0; t < a.y.dim(0); ++t) {
        for (int64_t h = 0; h < hidden; ++h) {
            float& y = a.y.ptr<float>()[t * hidden + h];
            double acc = a.accumulate ? y : 0.0;
            for (int64_t j = 0; j < top_k; ++j) {
                const int64_t row = a.row_of.ptr<const int32_t>()[t * top_k + j];
                acc += static_cast<double>(a.topk_weights.ptr<const float>()[t * top_k + j]) *
                       a.out_permuted.ptr<const float>()[row * hidden + h];
            }
            y = static_cast<float>(acc);
        }
    }
    return ok_status();
}

}  // namespace moe::ref
