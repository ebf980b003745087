// The input of one forward step: a ragged batch of sequences, each contributing its new tokens.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace moe {

// One sequence's part of a step. Its new tokens sit at positions
// [num_cached, num_cached + token_ids.size()); the first num_cached positions are already in
// the KV cache. block_table lists the cache blocks of positions [0, num_cached + new tokens),
// block i holding positions [i * block_size, (i + 1) * block_size).
struct SequenceInput {
    std::span<const int32_t> token_ids;
    int64_t num_cached = 0;
    std::span<const int32_t> block_table;
    bool all_logits = false;  // logits for every new token; otherwise for the last one only
};

struct BatchView {
    std::vector<SequenceInput> sequences;
};

// Logits on the host, f32 [num_rows, vocab_size]. Sequence s owns rows
// [row_start[s], row_start[s + 1]): one row per new token if it asked for all logits, else one.
struct ForwardOutput {
    std::vector<float> logits;
    std::vector<int64_t> row_start;
    int64_t vocab_size = 0;

    const float* row(int64_t r) const { return logits.data() + r * vocab_size; }
    // The last row of sequence s (the logits that predict its next token).
    const float* last_row(size_t s) const { return row(row_start[s + 1] - 1); }
};

}  // namespace moe
