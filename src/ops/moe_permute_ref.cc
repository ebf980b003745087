#include "ops/data_checks.h"
#include "ops/ops.h"

namespace moe::ref {

// Quadratic on purpose: for each expert in turn, scan all (token, slot) pairs in order.
Status moe_permute(const MoePermuteArgs& a) {
    MOE_RETURN_IF_ERROR(ops::validate(a));
    MOE_RETURN_IF_ERROR(ops::check_moe_permute_data(a));
    const int64_t top_k = a.topk_ids.dim(1);
    const int64_t pairs = a.topk_ids.numel();
    const int64_t hidden = a.x.dim(1);
    const auto* ids = a.topk_ids.ptr<const int32_t>();
    int32_t row = 0;
    for (int32_t e = 0; e < a.num_experts; ++e) {
        a.expert_offsets.ptr<int32_t>()[e] = row;
        for (int64_t p = 0; p < pairs; ++p) {
            if (ids[p] != e) continue;
            const int64_t t = p / top_k;
            a.row_of.ptr<int32_t>()[p] = row;
            a.token_of.ptr<int32_t>()[row] = static_cast<int32_t>(t);
            for (int64_t h = 0; h < hidden; ++h)
                a.x_permuted.ptr<float>()[row * hidden + h] = a.x.ptr<const float>()[t * hidden + h];
            ++row;
        }
    }
    a.expert_offsets.ptr<int32_t>()[a.num_experts] = row;
    return ok_status();
}

}  // namespace moe::ref
