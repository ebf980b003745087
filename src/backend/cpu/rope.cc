// Rotate-half RoPE computed the way Hugging Face does it, in float32: inv_freq = 1 / theta^(2i/d)
// with the exponent and the power in f32, angle = float(pos) * inv_freq, cos/sin in f32, and
// x*cos - y*sin as two rounded products. Against the double reference the error grows with the
// position (~pos * 2^-24 rad in the angle): about 1e-4 absolute at position 2000.
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "ops/data_checks.h"

namespace moe::cpu {
namespace {

void rotate_heads(float* x, int64_t num_heads, int64_t head_dim, const float* cos, const float* sin, int half) {
    for (int64_t h = 0; h < num_heads; ++h) {
        float* v = x + h * head_dim;
        for (int i = 0; i < half; ++i) {
            const float x0 = v[i];
            const float x1 = v[i + half];
            const float a = x0 * cos[i];
            const float b = x1 * sin[i];
            const float c = x1 * cos[i];
            const float d = x0 * sin[i];
            v[i] = a - b;
            v[i + half] = c + d;
        }
    }
}

}  // namespace

Status rope(Backend& be, const RopeArgs& a) {
    MOE_RETURN_IF_ERROR(ops::check_rope_data(a));
    const int half = a.rotary_dim / 2;
    // NOTE: thread_local scratch throughout: no allocation per step once warmed up.
    thread_local std::vector<float> inv_freq_buf;
    inv_freq_buf.resize(static_cast<size_t>(half));
    float* inv_freq = inv_freq_buf.data();
    const bool table = !a.inv_freq.empty();
    const float factor = table ? a.attention_factor : 1.0f;
    for (int i = 0; i < half; ++i) {
        const float exponent = static_cast<float>(2 * i) / static_cast<float>(a.rotary_dim);
        inv_freq[i] = table ? a.inv_freq.ptr<const float>()[i] : 1.0f / std::pow(a.theta, exponent);
    }
    const int64_t head_dim = a.q.dim(2);
    as_cpu(be).pool().parallel_for(a.q.dim(0), [&](int64_t begin, int64_t end) {
        thread_local std::vector<float> cos, sin;
        cos.resize(static_cast<size_t>(half));
        sin.resize(static_cast<size_t>(half));
        for (int64_t t = begin; t < end; ++t) {
            const float pos = static_cast<float>(a.positions.ptr<const int32_t>()[t]);
            for (int i = 0; i < half; ++i) {
                const float angle = pos * inv_freq[i];
                cos[static_cast<size_t>(i)] = std::cos(angle) * factor;
                sin[static_cast<size_t>(i)] = std::sin(angle) * factor;
            }
            rotate_heads(a.q.ptr<float>() + t * a.q.dim(1) * head_dim, a.q.dim(1), head_dim, cos.data(), sin.data(),
                         half);
            rotate_heads(a.k.ptr<float>() + t * a.k.dim(1) * head_dim, a.k.dim(1), head_dim, cos.data(), sin.data(),
                         half);
        }
    });
    return ok_status();
}

}  // namespace moe::cpu
