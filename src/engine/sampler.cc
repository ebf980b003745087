#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>

namespace moe {

Status validate(const SamplingParams& p) {
    auto bad = [](const std::string& field, float v, const std::string& limit) {
        return invalid_argument(field + " must be " + limit + ", got " + std::to_string(v));
    };
    if (!std::isfinite(p.temperature) || p.temperature < 0 || p.temperature > 100)
        return bad("temperature", p.temperature, "finite and in [0, 100]");
    if (p.top_k < -1) return invalid_argument("top_k must be -1 (off), 0 (off) or >= 1, got " + std::to_string(p.top_k));
    if (!std::isfinite(p.top_p) || p.top_p <= 0 || p.top_p > 1) return bad("top_p", p.top_p, "in (0, 1]");
    if (!std::isfinite(p.min_p) || p.min_p < 0 || p.min_p > 1) return bad("min_p", p.min_p, "in [0, 1]");
    if (!std::isfinite(p.repetition_penalty) || p.repetition_penalty <= 0 || p.repetition_penalty > 10)
        return bad("repetition_penalty", p.repetition_penalty, "in (0, 10]");
    if (!std::isfinite(p.presence_penalty) || p.presence_penalty < -2 || p.presence_penalty > 2)
        return bad("presence_penalty", p.presence_penalty, "in [-2, 2]");
    if (!std::isfinite(p.frequency_penalty) || p.frequency_penalty < -2 || p.frequency_penalty > 2)
        return bad("frequency_penalty", p.frequency_penalty, "in [-2, 2]");
    if (p.logprobs < 0 || p.logprobs > kMaxLogprobs)
        return invalid_argument("logprobs must be in [0, " + std::to_string(kMaxLogprobs) + "], got " +
                                std::to_string(p.logprobs));
    return ok_status();
}

SequenceSampler::SequenceSampler(const SamplingParams& params, std::span<const int32_t> prompt)
    : params_(params), rng_(params.seed ? *params.seed : (uint64_t{std::random_device{}()} << 32) ^ std::random_device{}()) {
    seen_.assign(prompt.begin(), prompt.end());
}

void SequenceSampler::observe(int32_t token) {
    ++output_counts_[token];
    if (token >= 0 && static_cast<size_t>(token) < seen_mask_.size()) {
        if (!seen_mask_[static_cast<size_t>(token)]) {
            seen_mask_[static_cast<size_t>(token)] = 1;
            seen_.push_back(token);
        }
    } else {
        seen_.push_back(token);  // mask not built yet: deduplicated when it is
    }
}

SampleResult SequenceSampler::sample(const float* logits, int64_t vocab) {
    const size_t V = static_cast<size_t>(vocab);
    SampleResult result;

    // ---- raw logprobs (for reporting), in double
    double max_raw = -std::numeric_limits<double>::infinity();
    for (size_t i = 0; i < V; ++i) max_raw = std::max(max_raw, static_cast<double>(logits[i]));
    double sum_raw = 0;
    for (size_t i = 0; i < V; ++i) sum_raw += std::exp(static_cast<double>(logits[i]) - max_raw);
    const double log_z = max_raw + std::log(sum_raw);
    auto raw_logprob = [&](int32_t t) { return static_cast<float>(static_cast<double>(logits[t]) - log_z); };

    // ---- penalties on a working copy
    work_.assign(logits, logits + V);
    if (seen_mask_.size() != V) {
        seen_mask_.assign(V, 0);
        std::vector<int32_t> dedup;
        for (int32_t t : seen_)
            if (t >= 0 && static_cast<size_t>(t) < V && !seen_mask_[static_cast<size_t>(t)]) {
                seen_mask_[static_cast<size_t>(t)] = 1;
                dedup.push_back(t);
            }
        seen_.swap(dedup);
    }
    if (params_.repetition_penalty != 1.0f) {
        const float rp = params_.repetition_penalty;
        for (int32_t t : seen_) {
            float& l = work_[static_cast<size_t>(t)];
            l = l > 0 ? l / rp : l * rp;
        }
    }
    if (params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f) {
        for (const auto& [t, count] : output_counts_) {
            if (t < 0 || static_cast<size_t>(t) >= V) continue;
            work_[static_cast<size_t>(t)] -= params_.presence_penalty + params_.frequency_penalty * static_cast<float>(count);
        }
    }

    int32_t chosen = 0;
    if (params_.temperature == 0.0f) {
        // Greedy: first index of the maximum.
        chosen = static_cast<int32_t>(std::max_element(work_.begin(), work_.end()) - work_.begin());
    } else {
        // ---- candidates: top-k by modified logit (ties: lower id first), sorted descending
        const float inv_t = 1.0f / params_.temperature;
        size_t k = V;
        if (params_.top_k > 0) k = std::min(V, static_cast<size_t>(params_.top_k));
        idx_.resize(V);
        std::iota(idx_.begin(), idx_.end(), 0);
        auto by_logit = [&](int32_t a, int32_t b) {
            const float la = work_[static_cast<size_t>(a)], lb = work_[static_cast<size_t>(b)];
            return la > lb || (la == lb && a < b);
        };
        if (k < V) {
            std::nth_element(idx_.begin(), idx_.begin() + static_cast<std::ptrdiff_t>(k), idx_.end(), by_logit);
            idx_.resize(k);
        }
        std::sort(idx_.begin(), idx_.end(), by_logit);
        // ---- probabilities over the candidates after temperature
        const double top = static_cast<double>(work_[static_cast<size_t>(idx_[0])]) * inv_t;
        std::vector<double> probs(idx_.size());
        double z = 0;
        for (size_t i = 0; i < idx_.size(); ++i) {
            probs[i] = std::exp(static_cast<double>(work_[static_cast<size_t>(idx_[i])]) * inv_t - top);
            z += probs[i];
        }
        for (double& p : probs) p /= z;
        // ---- top-p: the smallest prefix whose mass reaches top_p (at least one token)
        size_t keep = probs.size();
        if (params_.top_p < 1.0f) {
            double cum = 0;
            for (size_t i = 0; i < probs.size(); ++i) {
                cum += probs[i];
                if (cum >= params_.top_p) {
                    keep = i + 1;
                    break;
                }
            }
        }
        // ---- min-p: drop tokens below min_p * p(max)
        if (params_.min_p > 0.0f) {
            const double threshold = params_.min_p * probs[0];
            size_t n = 0;
            while (n < keep && probs[n] >= threshold) ++n;
            keep = std::max<size_t>(1, n);
        }
        // ---- one draw
        double mass = 0;
        for (size_t i = 0; i < keep; ++i) mass += probs[i];
        const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng_) * mass;
        double cum = 0;
        chosen = idx_[keep - 1];
        for (size_t i = 0; i < keep; ++i) {
            cum += probs[i];
            if (u < cum) {
                chosen = idx_[i];
                break;
            }
        }
    }
    result.token = chosen;
    result.logprob = raw_logprob(chosen);
    if (params_.logprobs > 0) {
        const size_t n = std::min(V, static_cast<size_t>(params_.logprobs));
        std::vector<int32_t> ids(V);
        std::iota(ids.begin(), ids.end(), 0);
        std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(n), ids.end(), [&](int32_t a, int32_t b) {
            return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
        });
        for (size_t i = 0; i < n; ++i) result.top.push_back({ids[i], raw_logprob(ids[i])});
    }
    observe(chosen);
    return result;
}

}  // namespace moe
