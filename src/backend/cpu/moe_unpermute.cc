// f32 accumulation in slot order: ~1e-6 relative against the double reference.
#include <algorithm>

#include "backend/cpu/cpu_backend.h"
#include "ops/data_checks.h"

namespace moe::cpu {

Status moe_unpermute(Backend& be, const MoeUnpermuteArgs& a) {
    MOE_RETURN_IF_ERROR(ops::check_moe_unpermute_data(a));
    const int64_t top_k = a.topk_weights.dim(1);
    const int64_t hidden = a.y.dim(1);
    as_cpu(be).pool().parallel_for(
        a.y.dim(0),
        [&](int64_t begin, int64_t end) {
            for (int64_t t = begin; t < end; ++t) {
                float* y = a.y.ptr<float>() + t * hidden;
                if (!a.accumulate) std::fill(y, y + hidden, 0.0f);
                for (int64_t j = 0; j < top_k; ++j) {
                    const float w = a.topk_weights.ptr<const float>()[t * top_k + j];
                    const float* row =
                        a.out_permuted.ptr<const float>() + a.row_of.ptr<const int32_t>()[t * top_k + j] * hidden;
                    for (int64_t h = 0; h < hidden; ++h) y[h] += w * row[h];
                }
            }
        },
        ThreadPool::grain_for(hidden * top_k));
    return ok_status();
}

}  // namespace moe::cpu
