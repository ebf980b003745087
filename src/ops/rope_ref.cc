#include <cmath>

#include "ops/data_checks.h"
#include "ops/ops.h"

namespace moe::ref {
namespace {

void rotate(float* x, double pos, const RopeArgs& a) {
    const int half = a.rotary_dim / 2;
    const bool table = !a.inv_freq.empty();
    const double factor = table ? a.attention_factor : 1.0;
    for (int i = 0; i < half; ++i) {
        const double angle = table ? pos * static_cast<double>(a.inv_freq.ptr<const float>()[i])
                                   : pos * std::pow(a.theta, -2.0 * i / a.rotary_dim);
        const double x0 = x[i];
        const double x1 = x[i + half];
        const double c = std::cos(angle) * factor, s = std::sin(angle) * factor;
        x[i] = static_cast<float>(x0 * c - x1 * s);
        x[i + half] = static_cast<float>(x1 * c + x0 * s);
    }
}

}  // namespace

Status rope(const RopeArgs& a) {
    MOE_RETURN_IF_ERROR(ops::validate(a));
    MOE_RETURN_IF_ERROR(ops::check_rope_data(a));
    const int64_t head_dim = a.q.dim(2);
    for (int64_t t = 0; t < a.q.dim(0); ++t) {
        const double pos = a.positions.ptr<const int32_t>()[t];
        for (int64_t h = 0; h < a.q.dim(1); ++h) rotate(a.q.ptr<float>() + (t * a.q.dim(1) + h) * head_dim, pos, a);
        for (int64_t h = 0; h < a.k.dim(1); ++h) rotate(a.k.ptr<float>() + (t * a.k.dim(1) + h) * head_dim, pos, a);
    }
    return ok_status();
}

}  // namespace moe::ref
