#include <cmath>

#include "backend/cpu/cpu_backend.h"

namespace moe::cpu {

Status moe_shared_gate(Backend& be, const MoeSharedGateArgs& a) {
    const int64_t hidden = a.y.dim(1);
    as_cpu(be).pool().parallel_for(
        a.y.dim(0),
        [&](int64_t begin, int64_t end) {
            for (int64_t t = begin; t < end; ++t) {
                const float gate = 1.0f / (1.0f + std::exp(-a.gate_logits.ptr<const float>()[t]));
                const float* shared = a.shared_out.ptr<const float>() + t * hidden;
                float* y = a.y.ptr<float>() + t * hidden;
                for (int64_t h = 0; h < hidden; ++h) y[h] += gate * shared[h];
            }
        },
        ThreadPool::grain_for(hidden));
    return ok_status();
}

}  // namespace moe::cpu
