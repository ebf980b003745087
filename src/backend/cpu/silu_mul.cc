// f32 math (expf): relative error ~1e-6 against the double reference.
#include <cmath>

#include "backend/cpu/cpu_backend.h"

namespace moe::cpu {

Status silu_mul(Backend& be, const SiluMulArgs& a) {
    const int64_t cols = a.gate.dim(1);
    as_cpu(be).pool().parallel_for(
        a.gate.dim(0),
        [&](int64_t begin, int64_t end) {
            for (int64_t r = begin; r < end; ++r) {
                const float* g = a.gate.ptr<const float>() + r * a.gate.stride(0);
                const float* u = a.up.ptr<const float>() + r * a.up.stride(0);
                float* out = a.out.ptr<float>() + r * cols;  // may alias gate: same element, read first
                for (int64_t c = 0; c < cols; ++c) out[c] = g[c] / (1.0f + std::exp(-g[c])) * u[c];
            }
        },
        ThreadPool::grain_for(cols));
    return ok_status();
}

}  // namespace moe::cpu
