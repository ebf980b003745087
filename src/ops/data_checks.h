// Data-dependent argument checks (ids in range, slots inside the cache, well-formed attention
// metadata). validate() cannot do these because the data may live on a device; the reference
// and the CPU backend run them on host memory before touching anything, so both report the
// same error for the same input. All return kOutOfRange naming the offending index.
#pragma once

#include <cstdint>

#include "ops/ops.h"

namespace moe::ops {

// Every values[i] in [lo, hi). `cols` > 1 prints the index as [row, col].
Status check_index_range(const char* op, const char* name, const int32_t* values, int64_t n, int64_t lo, int64_t hi,
                         int64_t cols = 1);

Status check_embedding_data(const EmbeddingArgs& a);
Status check_rope_data(const RopeArgs& a);
Status check_kv_write_data(const KvWriteArgs& a);
// query_start, kv_lens, and the block table entries that the queries read.
Status check_attention_data(const AttentionArgs& a);
Status check_moe_permute_data(const MoePermuteArgs& a);
// expert_offsets: starts at 0, non-decreasing, ends at R; experts with rows have their weights.
Status check_moe_experts_data(const MoeExpertsArgs& a);
Status check_moe_unpermute_data(const MoeUnpermuteArgs& a);

}  // namespace moe::ops
