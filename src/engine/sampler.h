// Sampling: turns one sequence's logits into its next token.
//
// Order of processing (as vLLM and Hugging Face do it):
//   1. penalties on the logits of the tokens seen so far:
//        repetition (tokens in the prompt or the output): logit / p if logit > 0, else logit * p;
//        then frequency and presence (output tokens only): logit -= f * count + (count > 0 ? p : 0);
//   2. temperature: logit / T (T == 0 is greedy: argmax after penalties, ties to the lowest id);
//   3. top-k: the k largest logits (ties to the lowest id, so exactly k survive);
//   4. top-p: the smallest prefix of the candidates, by descending probability, whose mass
//      reaches top_p (always at least one token);
//   5. min-p: drop candidates whose probability is below min_p * (the largest probability);
//   6. one draw from the survivors, renormalized.
// Softmax runs in double. Without top-k, top-p sorts only as much of the vocabulary as it needs
// (growing partial sorts), and with neither top-k nor top-p nothing is sorted at all.
//
// Total: for every parameter set validate() accepts (denormal temperatures and penalties
// included) and every logit row, sample() returns a token in [0, vocab). Logits are sanitized
// before and after the penalties (NaN -> -inf, +inf -> the largest float), the maximum always
// weighs exactly 1 (a temperature whose reciprocal overflows keeps only the exact maxima), and a
// fully masked row (all -inf) falls back to greedy (token 0).
//
// Reported logprobs are log_softmax of the unmodified logits (vLLM's default "raw" logprobs).
//
// Each request owns its SequenceSampler and its RNG, which consumes exactly one 64-bit draw per
// sampled token (greedy included), so the same seed gives the same tokens whatever else is in
// the batch. The uniform variate is built from the raw 64 bits, not std::uniform_real_distribution,
// so a seed gives the same tokens with any standard library. Not thread-safe; the engine thread
// owns it.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <span>
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
    std::vector<TokenLogprob> top;  // the top `logprobs` tokens by raw logprob, descending (ties: lowest id)
};

class SequenceSampler {
public:
    // `params` must have passed validate(). The prompt is kept only when a repetition penalty
    // needs it.
    SequenceSampler(const SamplingParams& params, std::span<const int32_t> prompt);

    // Samples from logits[0, vocab). The vocabulary size must be the same on every call.
    // NaN logits count as -inf and +inf as the largest float, so a broken model row cannot
    // break the sort. Records the returned token for the penalties.
    SampleResult sample(const float* logits, int64_t vocab);

    // Records an output token chosen elsewhere (penalties count it). Ids outside the vocabulary
    // are ignored.
    void observe(int32_t token);

    const SamplingParams& params() const { return params_; }

    // The seed the RNG started from (params().seed, or the one drawn from std::random_device)
    // and the 64-bit draws taken since (one per sample()). A sampler built with the same params,
    // seed = resolved_seed() and then skip_draws(num_draws()) continues the same stream: what
    // prefill/decode disaggregation moves from the prefill worker to the decode worker.
    uint64_t resolved_seed() const { return seed_; }
    uint64_t num_draws() const { return draws_; }
    // Advances the RNG by n draws (O(n): callers bound n, as the decode worker does by the
    // context length).
    void skip_draws(uint64_t n);

    // The logits of the last sample() on this thread (by any sampler) after sanitizing and
    // penalties, before temperature: what greedy takes the argmax of. For tests and debugging.
    std::span<const float> processed_logits() const;

private:
    // Per-vocabulary scratch. One per thread, not per request: the engine thread samples one
    // sequence at a time, and 16 bytes x 152k ids x hundreds of running requests would be
    // hundreds of MB of idle buffers. Sized on first use, reused after: no allocation per call.
    struct Scratch {
        std::vector<float> work;   // penalized, sanitized logits
        std::vector<int32_t> idx;  // candidate ids
        std::vector<double> prob;  // unnormalized probabilities, indexed by id
    };
    static Scratch& scratch();

    bool penalized() const;
    // Builds the per-vocabulary penalty tables on the first sample(), when the size is known.
    void build_penalty_state(size_t vocab);
    void record_output(int32_t token);
    double next_uniform();  // [0, 1), exactly one RNG draw
    // Temperature, top-k, top-p, min-p and the draw on work_; `max_logit` is work_'s maximum.
    int32_t draw(Scratch& sc, double max_logit, double u);
    void fill_logprobs(const float* logits, size_t vocab, int32_t chosen, SampleResult& result) const;

    SamplingParams params_;
    uint64_t seed_ = 0;
    uint64_t draws_ = 0;
    std::mt19937_64 rng_;
    size_t vocab_ = 0;  // 0 until the first sample()

    // Penalty state, used only when a penalty is active.
    std::vector<int32_t> pending_prompt_;  // until the vocabulary is known
    std::vector<int32_t> pending_output_;
    std::vector<int32_t> output_count_;  // per id
    std::vector<uint8_t> in_prompt_;     // per id
    std::vector<int32_t> touched_;       // distinct ids in prompt or output
};

}  // namespace moe
