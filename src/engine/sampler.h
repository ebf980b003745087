// Sampling: turns one sequence's logits into its next token.
//
// Order of processing (as vLLM and Hugging Face do it):
//   penalties (repetition, presence, frequency) -> temperature -> top-k -> top-p -> min-p -> draw.
// temperature 0 means greedy: argmax after penalties (ties: lowest id).
// Reported logprobs are log_softmax of the unmodified logits (vLLM's default "raw" logprobs).
//
// Each request has its own SequenceSampler and RNG, so the same seed gives the same tokens
// whatever else is in the batch. Not thread-safe; the engine thread owns it.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <unordered_map>
#include <vector>

#include "moe/status.h"

namespace moe {

inline constexpr int32_t kMaxLogprobs = 20;

struct SamplingParams {
    float temperature = 1.0f;         // 0 = greedy; [0, 100], finite
    int32_t top_k = -1;               // -1 or 0: off; else >= 1
    float top_p = 1.0f;               // (0, 1]
    float min_p = 0.0f;               // [0, 1]
    float repetition_penalty = 1.0f;  // (0, 10]; tokens seen in prompt or output: logit / p if > 0 else * p
    float presence_penalty = 0.0f;    // [-2, 2]; logit -= p for each token present in the output
    float frequency_penalty = 0.0f;   // [-2, 2]; logit -= p * count in the output
    std::optional<uint64_t> seed;     // absent: seeded from std::random_device
    int32_t logprobs = 0;             // top-n alternatives to return, [0, kMaxLogprobs]
};

// INVALID_ARGUMENT naming the field and its limit.
Status validate(const SamplingParams& params);

struct TokenLogprob {
    int32_t token = 0;
    float logprob = 0;
};

struct SampleResult {
    int32_t token = 0;
    float logprob = 0;              // raw log_softmax of the chosen token
    std::vector<TokenLogprob> top;  // the top `logprobs` tokens by raw logprob, descending
};

class SequenceSampler {
public:
    SequenceSampler(const SamplingParams& params, std::span<const int32_t> prompt);

    // Samples from logits[0, vocab). Consumes exactly one RNG draw per call when not greedy.
    // Records the token for the penalties.
    SampleResult sample(const float* logits, int64_t vocab);

    // Records an output token chosen elsewhere (penalties count it).
    void observe(int32_t token);

    const SamplingParams& params() const { return params_; }

private:
    SamplingParams params_;
    std::mt19937_64 rng_;
    std::unordered_map<int32_t, int32_t> output_counts_;
    std::vector<int32_t> seen_;       // distinct tokens of prompt + output (repetition penalty)
    std::vector<uint8_t> seen_mask_;  // grown to the vocab on first use
    std::vector<float> work_;         // scratch: modified logits
    std::vector<int32_t> idx_;        // scratch: candidate ids
};

}  // namespace moe
