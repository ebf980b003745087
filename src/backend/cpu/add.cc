#include <algorithm>

#include "backend/cpu/cpu_backend.h"

namespace moe::cpu {

Status add(Backend& be, const AddArgs& a) {
    const float* x = a.a.ptr<const float>();
    const float* y = a.b.ptr<const float>();
    float* out = a.out.ptr<float>();
    const int64_t n = a.a.numel();
    // Small tensors stay on the calling thread: waking workers costs more than the adds.
    constexpr int64_t kChunk = 1 << 14;
    as_cpu(be).pool().parallel_for((n + kChunk - 1) / kChunk, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin * kChunk; i < std::min(n, end * kChunk); ++i) out[i] = x[i] + y[i];
    });
    return ok_status();
}

}  // namespace moe::cpu
