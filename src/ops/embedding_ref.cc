#include "ops/data_checks.h"
#include "ops/ops.h"
#include "ops/ref_util.h"

namespace moe::ref {

Status embedding(const EmbeddingArgs& a) {
    MOE_RETURN_IF_ERROR(ops::validate(a));
    MOE_RETURN_IF_ERROR(ops::check_embedding_data(a));
    const int64_t hidden = a.table.dim(1);
    for (int64_t t = 0; t < a.ids.dim(0); ++t) {
        const int64_t id = a.ids.ptr<const int32_t>()[t];
        for (int64_t h = 0; h < hidden; ++h)
            a.out.ptr<float>()[t * hidden + h] = static_cast<float>(load(a.table, id * hidden + h));
    }
    return ok_status();
}

}  // namespace moe::ref
