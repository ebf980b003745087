#include <cmath>

#include "ops/data_checks.h"
#include "ops/ops.h"

namespace moe::ref {
namespace {

void rotate(float* x, double pos, double theta, int rotary_dim) {
    const int half = rotary_dim / 2;
    for (int i = 0; i < half; ++i) {
        const double angle = pos * std::pow(theta, -2.0 * i / rotary_dim);
        const double x0 = x[i];
        const double x1 = x[i + half];
        x[i] = static_cast<float>(x0 * std::cos(angle) - x1 * std::sin(angle));
        x[i + half] = static_cast<float>(x1 * std::cos(angle) + x0 * std::sin(angle));
    }
}

}  // namespace

Status rope(const RopeArgs& a) {
    MOE_RETURN_IF_ERROR(ops::validate(a));
    MOE_RETURN_IF_ERROR(ops::check_rope_data(a));
    const int64_t head_dim = a.q.dim(2);
    for (int64_t t = 0; t < a.q.dim(0); ++t) {
        const double pos = a.positions.ptr<const int32_t>()[t];
        for (int64_t h = 0; h < a.q.dim(1); ++h)
            rotate(a.q.ptr<float>() + (t * a.q.dim(1) + h) * head_dim, pos, a.theta, a.rotary_dim);
        for (int64_t h = 0; h < a.k.dim(1); ++h)
            rotate(a.k.ptr<float>() + (t * a.k.dim(1) + h) * head_dim, pos, a.theta, a.rotary_dim);
    }
    return ok_status();
}

}  // namespace moe::ref
