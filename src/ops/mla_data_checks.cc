// Data checks of the MLA and grouped-routing ops (ops/mla_ops.h), on host memory: the reference
// and the CPU kernels run them before writing anything, so both report the same error.
#include <string>

#include "ops/data_checks.h"
#include "ops/mla_ops.h"

namespace moe::ops {
namespace {

Status check_slots(const char* op, const TensorView& slots, const TensorView& cache, int64_t lo) {
    const int64_t num_slots = cache.dim(0) * cache.dim(1);
    const auto* s = slots.ptr<const int64_t>();
    for (int64_t t = 0; t < slots.dim(0); ++t) {
        if (s[t] < lo || s[t] >= num_slots)
            return out_of_range(std::string(op) + ": slot " + std::to_string(t) + " = " + std::to_string(s[t]) +
                                " is outside [" + std::to_string(lo) + ", " + std::to_string(num_slots) +
                                ") (blocks * block_size of the cache)");
    }
    return ok_status();
}

// starts[0] == 0, non-decreasing, starts[S] == total.
Status check_starts(const char* op, const char* name, const int32_t* starts, int64_t num_seqs, int64_t total) {
    if (starts[0] != 0) return out_of_range(std::string(op) + ": " + name + "[0] = " + std::to_string(starts[0]));
    for (int64_t s = 0; s < num_seqs; ++s)
        if (starts[s + 1] < starts[s])
            return out_of_range(std::string(op) + ": " + name + "[" + std::to_string(s + 1) +
                                "] = " + std::to_string(starts[s + 1]) + " is below " + name + "[" + std::to_string(s) +
                                "] = " + std::to_string(starts[s]));
    if (starts[num_seqs] != total)
        return out_of_range(std::string(op) + ": " + name + "[" + std::to_string(num_seqs) +
                            "] = " + std::to_string(starts[num_seqs]) + ", must be " + std::to_string(total));
    return ok_status();
}

}  // namespace

Status check_rope_table_data(const RopeTableArgs& a) {
    return check_index_range("rope_table", "positions", a.positions.ptr<const int32_t>(), a.positions.dim(0), 0,
                             int64_t{INT32_MAX} + 1);
}

Status check_latent_write_data(const LatentWriteArgs& a) {
    return check_slots("latent_write", a.slot_mapping, a.cache, -1);
}

Status check_latent_gather_data(const LatentGatherArgs& a) {
    return check_slots("latent_gather", a.slots, a.cache, 0);
}

Status check_ragged_attention_data(const RaggedAttentionArgs& a) {
    const int64_t S = a.query_start.dim(0) - 1;
    const auto* qs = a.query_start.ptr<const int32_t>();
    const auto* ks = a.kv_start.ptr<const int32_t>();
    MOE_RETURN_IF_ERROR(check_starts("ragged_attention", "query_start", qs, S, a.q.dim(0)));
    MOE_RETURN_IF_ERROR(check_starts("ragged_attention", "kv_start", ks, S, a.k.dim(0)));
    for (int64_t s = 0; s < S; ++s)
        if (ks[s + 1] - ks[s] < qs[s + 1] - qs[s])
            return out_of_range("ragged_attention: sequence " + std::to_string(s) + " has " +
                                std::to_string(ks[s + 1] - ks[s]) + " kv rows for " +
                                std::to_string(qs[s + 1] - qs[s]) + " query rows");
    return ok_status();
}

Status check_mla_attention_data(const MlaAttentionArgs& a) {
    // The paged metadata means what it means for AttentionArgs: the same checks, on a one-head
    // view of the latent pool.
    const TensorView one_head = TensorView::make(a.cache.data, a.cache.dtype,
                                                 {a.cache.dim(0), a.cache.dim(1), 1, a.cache.dim(2)}, a.cache.device);
    const AttentionArgs as_paged{.q = a.q_latent,
                                 .k_cache = one_head,
                                 .v_cache = one_head,
                                 .block_tables = a.block_tables,
                                 .query_start = a.query_start,
                                 .kv_lens = a.kv_lens,
                                 .out = a.out};
    return check_attention_data(as_paged).with_context("mla_attention");
}

}  // namespace moe::ops
