#include "ops/data_checks.h"

#include <algorithm>
#include <string>

namespace moe::ops {
namespace {

std::string index_str(int64_t i, int64_t cols) {
    if (cols <= 1) return "[" + std::to_string(i) + "]";
    return "[" + std::to_string(i / cols) + ", " + std::to_string(i % cols) + "]";
}

}  // namespace

Status check_index_range(const char* op, const char* name, const int32_t* values, int64_t n, int64_t lo, int64_t hi,
                         int64_t cols) {
    for (int64_t i = 0; i < n; ++i) {
        if (values[i] < lo || values[i] >= hi)
            return out_of_range(std::string(op) + ": " + name + index_str(i, cols) + " = " + std::to_string(values[i]) +
                                " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) + ")");
    }
    return ok_status();
}

Status check_embedding_data(const EmbeddingArgs& a) {
    return check_index_range("embedding", "ids", a.ids.ptr<const int32_t>(), a.ids.dim(0), 0, a.table.dim(0));
}

Status check_rope_data(const RopeArgs& a) {
    return check_index_range("rope", "positions", a.positions.ptr<const int32_t>(), a.positions.dim(0), 0,
                             int64_t{INT32_MAX} + 1);
}

Status check_kv_write_data(const KvWriteArgs& a) {
    const int64_t num_slots = a.k_cache.dim(0) * a.k_cache.dim(1);
    const auto* slots = a.slot_mapping.ptr<const int64_t>();
    for (int64_t t = 0; t < a.slot_mapping.dim(0); ++t) {
        if (slots[t] < -1 || slots[t] >= num_slots)
            return out_of_range("kv_write: slot_mapping[" + std::to_string(t) + "] = " + std::to_string(slots[t]) +
                                " is outside [-1, " + std::to_string(num_slots) +
                                ") (blocks * block_size of the cache)");
    }
    return ok_status();
}

Status check_attention_data(const AttentionArgs& a) {
    const int64_t num_seqs = a.kv_lens.dim(0);
    const int64_t num_tokens = a.q.dim(0);
    const int64_t block_size = a.k_cache.dim(1);
    const int64_t num_blocks = a.k_cache.dim(0);
    const int64_t max_blocks = a.block_tables.dim(1);
    const auto* qs = a.query_start.ptr<const int32_t>();
    const auto* kv_lens = a.kv_lens.ptr<const int32_t>();
    const auto* tables = a.block_tables.ptr<const int32_t>();
    if (qs[0] != 0) return out_of_range("attention: query_start[0] = " + std::to_string(qs[0]) + ", must be 0");
    if (qs[num_seqs] != num_tokens)
        return out_of_range("attention: query_start[" + std::to_string(num_seqs) +
                            "] = " + std::to_string(qs[num_seqs]) + ", must equal the " + std::to_string(num_tokens) +
                            " tokens of q");
    for (int64_t s = 0; s < num_seqs; ++s) {
        const std::string seq = std::to_string(s);
        if (qs[s + 1] < qs[s])
            return out_of_range("attention: query_start[" + std::to_string(s + 1) + "] = " + std::to_string(qs[s + 1]) +
                                " is below query_start[" + seq + "] = " + std::to_string(qs[s]));
        const int64_t q_len = qs[s + 1] - qs[s];
        if (kv_lens[s] < q_len || kv_lens[s] > max_blocks * block_size)
            return out_of_range("attention: kv_lens[" + seq + "] = " + std::to_string(kv_lens[s]) + " is outside [" +
                                std::to_string(q_len) + " (its query rows), " +
                                std::to_string(max_blocks * block_size) + " (max_blocks_per_seq * block_size)]");
        if (q_len == 0) continue;
        // Only the blocks that some query row can see are read (and checked): a sliding window
        // lets the cache manager drop the blocks before it.
        const int64_t first_pos = kv_lens[s] - q_len;
        const int64_t lo = a.sliding_window > 0 ? std::max<int64_t>(0, first_pos - a.sliding_window + 1) : 0;
        for (int64_t b = lo / block_size; b <= (kv_lens[s] - 1) / block_size; ++b) {
            const int32_t block = tables[s * max_blocks + b];
            if (block < 0 || block >= num_blocks)
                return out_of_range("attention: block_tables[" + seq + ", " + std::to_string(b) +
                                    "] = " + std::to_string(block) + " is outside [0, " + std::to_string(num_blocks) +
                                    ") (the blocks of the cache)");
        }
    }
    return ok_status();
}

Status check_moe_permute_data(const MoePermuteArgs& a) {
    return check_index_range("moe_permute", "topk_ids", a.topk_ids.ptr<const int32_t>(), a.topk_ids.numel(), 0,
                             a.num_experts, a.topk_ids.dim(1));
}

Status check_moe_experts_data(const MoeExpertsArgs& a) {
    const int64_t num_experts = a.expert_offsets.dim(0) - 1;
    const int64_t rows = a.x_permuted.dim(0);
    const auto* off = a.expert_offsets.ptr<const int32_t>();
    if (off[0] != 0) return out_of_range("moe_experts: expert_offsets[0] = " + std::to_string(off[0]) + ", must be 0");
    if (off[num_experts] != rows)
        return out_of_range("moe_experts: expert_offsets[" + std::to_string(num_experts) +
                            "] = " + std::to_string(off[num_experts]) + ", must equal the " + std::to_string(rows) +
                            " rows of x_permuted");
    for (int64_t e = 0; e < num_experts; ++e) {
        if (off[e + 1] < off[e])
            return out_of_range("moe_experts: expert_offsets[" + std::to_string(e + 1) +
                                "] = " + std::to_string(off[e + 1]) + " is below expert_offsets[" + std::to_string(e) +
                                "] = " + std::to_string(off[e]));
        const size_t i = static_cast<size_t>(e);
        if (off[e + 1] > off[e] && (a.w_gate[i].empty() || a.w_up[i].empty() || a.w_down[i].empty()))
            return invalid_argument("moe_experts: expert " + std::to_string(e) + " has " +
                                    std::to_string(off[e + 1] - off[e]) + " rows but its weights are not present");
        const auto no_bias = [&](std::span<const TensorView> b) { return !b.empty() && b[i].empty(); };
        if (off[e + 1] > off[e] && (no_bias(a.b_gate) || no_bias(a.b_up) || no_bias(a.b_down)))
            return invalid_argument("moe_experts: expert " + std::to_string(e) + " has " +
                                    std::to_string(off[e + 1] - off[e]) + " rows but its biases are not present");
    }
    return ok_status();
}

Status check_moe_unpermute_data(const MoeUnpermuteArgs& a) {
    return check_index_range("moe_unpermute", "row_of", a.row_of.ptr<const int32_t>(), a.row_of.dim(0), 0,
                             a.out_permuted.dim(0));
}

}  // namespace moe::ops
