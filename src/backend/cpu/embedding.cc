#include <cstring>

#include "backend/cpu/cpu_backend.h"
#include "ops/data_checks.h"

namespace moe::cpu {

Status embedding(Backend& be, const EmbeddingArgs& a) {
    MOE_RETURN_IF_ERROR(ops::check_embedding_data(a));
    const int64_t hidden = a.table.dim(1);
    const auto* ids = a.ids.ptr<const int32_t>();
    float* out = a.out.ptr<float>();
    as_cpu(be).pool().parallel_for(
        a.ids.dim(0),
        [&](int64_t begin, int64_t end) {
            for (int64_t t = begin; t < end; ++t) {
                const int64_t row = ids[t] * hidden;
                if (a.table.dtype == DType::kF32) {
                    std::memcpy(out + t * hidden, a.table.ptr<const float>() + row,
                                static_cast<size_t>(hidden) * sizeof(float));
                } else {
                    convert_to_f32(a.table.ptr<const uint16_t>() + row, DType::kBF16, out + t * hidden,
                                   static_cast<size_t>(hidden));
                }
            }
        },
        ThreadPool::grain_for(hidden));
    return ok_status();
}

}  // namespace moe::cpu
