#include <cmath>
#include <vector>

#include "ops/ops.h"
#include "ops/ref_util.h"

namespace moe::ref {

Status rms_norm(const RmsNormArgs& a) {
    MOE_RETURN_IF_ERROR(ops::validate(a));
    const int64_t dim = a.x.dim(1);
    std::vector<double> row(static_cast<size_t>(dim));
    for (int64_t r = 0; r < a.x.dim(0); ++r) {
        double sum_sq = 0.0;
        for (int64_t i = 0; i < dim; ++i) {
            row[static_cast<size_t>(i)] = at2(a.x, r, i);  // copied first: out may alias x
            sum_sq += row[static_cast<size_t>(i)] * row[static_cast<size_t>(i)];
        }
        const double inv = 1.0 / std::sqrt(sum_sq / static_cast<double>(dim) + static_cast<double>(a.eps));
        for (int64_t i = 0; i < dim; ++i)
            at2(a.out, r, i) = static_cast<float>(row[static_cast<size_t>(i)] * inv * a.weight.ptr<const float>()[i]);
    }
    return ok_status();
}

}  // namespace moe::ref
