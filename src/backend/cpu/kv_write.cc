#include <cstring>

#include "backend/cpu/cpu_backend.h"
#include "ops/data_checks.h"

namespace moe::cpu {

// Sequential on purpose: two tokens may name the same slot (the later one wins, as in the
// reference), and the copy is tiny next to attention.
Status kv_write(Backend&, const KvWriteArgs& a) {
    MOE_RETURN_IF_ERROR(ops::check_kv_write_data(a));
    const int64_t row = a.k.dim(1) * a.k.dim(2);
    const auto* slots = a.slot_mapping.ptr<const int64_t>();
    const bool bf16 = a.k_cache.dtype == DType::kBF16;
    for (int64_t t = 0; t < a.k.dim(0); ++t) {
        const int64_t slot = slots[t];
        if (slot < 0) continue;
        const float* k = a.k.ptr<const float>() + t * row;
        const float* v = a.v.ptr<const float>() + t * row;
        if (bf16) {
            convert_from_f32(k, a.k_cache.ptr<uint16_t>() + slot * row, DType::kBF16, static_cast<size_t>(row));
            convert_from_f32(v, a.v_cache.ptr<uint16_t>() + slot * row, DType::kBF16, static_cast<size_t>(row));
        } else {
            std::memcpy(a.k_cache.ptr<float>() + slot * row, k, static_cast<size_t>(row) * sizeof(float));
            std::memcpy(a.v_cache.ptr<float>() + slot * row, v, static_cast<size_t>(row) * sizeof(float));
        }
    }
    return ok_status();
}

}  // namespace moe::cpu
