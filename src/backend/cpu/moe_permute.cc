// Counting sort of the (token, slot) pairs by expert; a stable scatter in (token, slot) order
// keeps the result deterministic. The index work is serial (cheap); the row copies are parallel.
#include <cstring>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "ops/data_checks.h"

namespace moe::cpu {

Status moe_permute(Backend& be, const MoePermuteArgs& a) {
    MOE_RETURN_IF_ERROR(ops::check_moe_permute_data(a));
    const int64_t top_k = a.topk_ids.dim(1);
    const int64_t pairs = a.topk_ids.numel();
    const int64_t hidden = a.x.dim(1);
    const auto* ids = a.topk_ids.ptr<const int32_t>();
    auto* offsets = a.expert_offsets.ptr<int32_t>();
    auto* row_of = a.row_of.ptr<int32_t>();
    auto* token_of = a.token_of.ptr<int32_t>();

    thread_local std::vector<int32_t> cursor;  // no allocation per step once warmed up
    cursor.assign(static_cast<size_t>(a.num_experts) + 1, 0);
    for (int64_t p = 0; p < pairs; ++p) ++cursor[static_cast<size_t>(ids[p]) + 1];
    for (int32_t e = 0; e < a.num_experts; ++e) cursor[static_cast<size_t>(e) + 1] += cursor[static_cast<size_t>(e)];
    std::memcpy(offsets, cursor.data(), cursor.size() * sizeof(int32_t));
    for (int64_t p = 0; p < pairs; ++p) {
        const int32_t row = cursor[static_cast<size_t>(ids[p])]++;
        row_of[p] = row;
        token_of[row] = static_cast<int32_t>(p / top_k);
    }
    as_cpu(be).pool().parallel_for(
        pairs,
        [&](int64_t begin, int64_t end) {
            for (int64_t r = begin; r < end; ++r)
                std::memcpy(a.x_permuted.ptr<float>() + r * hidden, a.x.ptr<const float>() + token_of[r] * hidden,
                            static_cast<size_t>(hidden) * sizeof(float));
        },
        ThreadPool::grain_for(hidden));
    return ok_status();
}

}  // namespace moe::cpu
