#include "ops/ops.h"

namespace moe::ref {

Status add(const AddArgs& a) {
    MOE_RETURN_IF_ERROR(ops::validate(a));
    for (int64_t i = 0; i < a.a.numel(); ++i)
        a.out.ptr<float>()[i] =
            static_cast<float>(static_cast<double>(a.a.ptr<const float>()[i]) + a.b.ptr<const float>()[i]);
    return ok_status();
}

}  // namespace moe::ref
