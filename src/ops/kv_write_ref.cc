#include "ops/data_checks.h"
#include "ops/ops.h"

namespace moe::ref {
namespace {

void store(const TensorView& cache, int64_t i, float v) {
    if (cache.dtype == DType::kBF16) {
        cache.ptr<uint16_t>()[i] = f32_to_bf16(v);
    } else {
        cache.ptr<float>()[i] = v;
    }
}

}  // namespace

Status kv_write(const KvWriteArgs& a) {
    MOE_RETURN_IF_ERROR(ops::validate(a));
    MOE_RETURN_IF_ERROR(ops::check_kv_write_data(a));
    // Slot s of the cache starts at element s * row, since [block, offset] flattens to a slot.
    const int64_t row = a.k.dim(1) * a.k.dim(2);
    for (int64_t t = 0; t < a.k.dim(0); ++t) {
        const int64_t slot = a.slot_mapping.ptr<const int64_t>()[t];
        if (slot < 0) continue;
        for (int64_t i = 0; i < row; ++i) {
            store(a.k_cache, slot * row + i, a.k.ptr<const float>()[t * row + i]);
            store(a.v_cache, slot * row + i, a.v.ptr<const float>()[t * row + i]);
        }
    }
    return ok_status();
}

}  // namespace moe::ref
