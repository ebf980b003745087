#include "engine/sampler.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>

#include "moe/check.h"

namespace moe {

namespace {

std::string num(float v) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%g", static_cast<double>(v));
    return buf;
}

// exp(x) in f32 for x <= 0: x = n ln2 + r, |r| <= ln2 / 2, exp(r) by Taylor to degree 6
// (relative error ~2e-7), times 2^n built in the exponent bits; below -87 it gives exp(-87)
// (~1.6e-38, nothing next to the maximum's 1). Branch-free, so the loop below vectorizes.
inline float exp_nonpositive(float x) {
    x = x < -87.0f ? -87.0f : x;
    constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to an integer
    const float n = (x * 1.44269504088896341f + kRound) - kRound;
    float r = x - n * 0.693145751953125f;   // ln2, high bits
    r = r - n * 1.428606765330187045e-06f;  // ln2, low bits
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // n in [-126, 0]: a normal 2^n
    float scale;
    std::memcpy(&scale, &bits, sizeof(scale));
    return p * scale;
}

// target_clones makes an ifunc whose resolver runs while the program is loaded; under
// ThreadSanitizer the resolver is instrumented and runs before the TSan runtime is initialized
// (a SEGFAULT before main). TSan builds take the default version only.
#if defined(__SANITIZE_THREAD__)
#define MOE_SAMPLER_CLONES
#else
#define MOE_SAMPLER_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif

// log(sum_i exp(x[i])) for finite x with max(x) = max: exp in f32, the sum in 16 double
// partial sums in a fixed order (deterministic). Every token's logprob needs it over the whole
// vocabulary (152k entries for Qwen3): a scalar double exp there cost ~1 ms per token.
MOE_SAMPLER_CLONES double log_sum_exp(const float* x, size_t n, float max) {
    constexpr size_t kLanes = 16;
    double acc[kLanes] = {};
    size_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
        float e[kLanes];  // two element-wise loops, each one vector op per step
        for (size_t l = 0; l < kLanes; ++l) e[l] = exp_nonpositive(x[i + l] - max);
        for (size_t l = 0; l < kLanes; ++l) acc[l] += static_cast<double>(e[l]);
    }
    for (; i < n; ++i) acc[0] += static_cast<double>(exp_nonpositive(x[i] - max));
    double sum = 0;
    for (double a : acc) sum += a;
    return static_cast<double>(max) + std::log(sum);
}

// A token's sampling weight relative to the maximum logit: exp((x - max) * inv_t) in f32, and
// exactly 0 below e^-87 (exp_nonpositive clamps there), so a -inf (masked or NaN) logit weighs
// nothing and is never drawn. The same function for the vectorized loop and single ids.
// NOTE: x is in [-inf, max] and max is finite (the caller sanitizes), so x - max is in [-inf, 0];
// the maximum itself weighs exactly 1 even when inv_t is +inf (a temperature below ~2.94e-39,
// whose reciprocal overflows): 0 * inf would be NaN. Then every other token weighs 0, the limit
// of the tempered softmax as the temperature goes to 0.
inline float tempered_weight(float x, float max, float inv_t) {
    const float y = x == max ? 0.0f : (x - max) * inv_t;
    return y < -87.0f ? 0.0f : exp_nonpositive(y);
}

// prob[i] = tempered_weight(x[i]) for i in [0, n); returns their sum, in 16 double partial sums
// in a fixed order (deterministic). A double exp per id cost ~1 ms per token at 152k ids.
MOE_SAMPLER_CLONES double tempered_weights(const float* x, size_t n, float max, float inv_t, double* prob) {
    constexpr size_t kLanes = 16;
    double acc[kLanes] = {};
    size_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
        float e[kLanes];
        for (size_t l = 0; l < kLanes; ++l) e[l] = tempered_weight(x[i + l], max, inv_t);
        for (size_t l = 0; l < kLanes; ++l) {
            prob[i + l] = static_cast<double>(e[l]);
            acc[l] += static_cast<double>(e[l]);
        }
    }
    for (; i < n; ++i) acc[0] += prob[i] = static_cast<double>(tempered_weight(x[i], max, inv_t));
    double sum = 0;
    for (double a : acc) sum += a;
    return sum;
}

// A logit as the sampler works with it: NaN counts as -inf (never chosen), +inf as the largest
// finite float (so that x - max is never inf - inf).
inline float sanitized(float l) {
    return std::isnan(l) ? -std::numeric_limits<float>::infinity() : std::min(l, std::numeric_limits<float>::max());
}

}  // namespace

Status validate(const SamplingParams& p) {
    auto bad = [](const char* field, float v, const char* limit) {
        return invalid_argument(std::string(field) + " must be " + limit + ", got " + num(v));
    };
    // Comparisons are written so that NaN fails them.
    if (!std::isfinite(p.temperature) || !(p.temperature >= 0) || !(p.temperature <= 100))
        return bad("temperature", p.temperature, "finite and in [0, 100] (0 = greedy)");
    if (p.top_k < -1) return invalid_argument("top_k must be -1 or 0 (off) or >= 1, got " + std::to_string(p.top_k));
    if (!(p.top_p > 0) || !(p.top_p <= 1)) return bad("top_p", p.top_p, "in (0, 1]");
    if (!(p.min_p >= 0) || !(p.min_p <= 1)) return bad("min_p", p.min_p, "in [0, 1]");
    if (!(p.repetition_penalty > 0) || !(p.repetition_penalty <= 10))
        return bad("repetition_penalty", p.repetition_penalty, "in (0, 10]");
    if (!(p.presence_penalty >= -2) || !(p.presence_penalty <= 2))
        return bad("presence_penalty", p.presence_penalty, "in [-2, 2]");
    if (!(p.frequency_penalty >= -2) || !(p.frequency_penalty <= 2))
        return bad("frequency_penalty", p.frequency_penalty, "in [-2, 2]");
    if (p.logprobs < 0 || p.logprobs > kMaxLogprobs)
        return invalid_argument("logprobs must be in [0, " + std::to_string(kMaxLogprobs) + "], got " +
                                std::to_string(p.logprobs));
    return ok_status();
}

SequenceSampler::SequenceSampler(const SamplingParams& params, std::span<const int32_t> prompt)
    : params_(params),
      seed_(params.seed ? *params.seed : (uint64_t{std::random_device{}()} << 32) ^ std::random_device{}()),
      rng_(seed_) {
    if (params_.repetition_penalty != 1.0f) pending_prompt_.assign(prompt.begin(), prompt.end());
}

bool SequenceSampler::penalized() const {
    return params_.repetition_penalty != 1.0f || params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f;
}

SequenceSampler::Scratch& SequenceSampler::scratch() {
    thread_local Scratch s;
    return s;
}

std::span<const float> SequenceSampler::processed_logits() const {
    return scratch().work;
}

void SequenceSampler::skip_draws(uint64_t n) {
    rng_.discard(n);
    draws_ += n;
}

double SequenceSampler::next_uniform() {
    ++draws_;
    return static_cast<double>(rng_() >> 11) * 0x1.0p-53;
}

void SequenceSampler::record_output(int32_t token) {
    if (token < 0 || static_cast<size_t>(token) >= output_count_.size()) return;
    const size_t t = static_cast<size_t>(token);
    if (output_count_[t] == 0 && !in_prompt_[t]) touched_.push_back(token);
    ++output_count_[t];
}

void SequenceSampler::observe(int32_t token) {
    if (!penalized()) return;
    if (vocab_ == 0) {
        pending_output_.push_back(token);
        return;
    }
    record_output(token);
}

void SequenceSampler::build_penalty_state(size_t vocab) {
    output_count_.assign(vocab, 0);
    in_prompt_.assign(vocab, 0);
    for (int32_t token : pending_prompt_) {
        if (token < 0 || static_cast<size_t>(token) >= vocab) continue;
        if (!in_prompt_[static_cast<size_t>(token)]) {
            in_prompt_[static_cast<size_t>(token)] = 1;
            touched_.push_back(token);
        }
    }
    for (int32_t token : pending_output_) record_output(token);
    pending_prompt_ = {};
    pending_output_ = {};
}

SampleResult SequenceSampler::sample(const float* logits, int64_t vocab) {
    MOE_CHECK(vocab > 0);
    const size_t V = static_cast<size_t>(vocab);
    if (vocab_ == 0) {
        vocab_ = V;
        if (penalized()) build_penalty_state(V);
    }
    MOE_CHECK_EQ(vocab_, V);

    // ---- penalties on a sanitized working copy: no NaN, nothing above the largest finite float
    Scratch& sc = scratch();
    sc.work.resize(V);
    for (size_t i = 0; i < V; ++i) sc.work[i] = sanitized(logits[i]);
    if (penalized()) {
        const float rp = params_.repetition_penalty;
        for (int32_t token : touched_) {
            const size_t t = static_cast<size_t>(token);
            float l = sc.work[t];
            if (rp != 1.0f) l = l > 0 ? l / rp : l * rp;
            const int32_t count = output_count_[t];
            if (count > 0) {  // two subtractions in this order, as vLLM rounds them
                l -= params_.frequency_penalty * static_cast<float>(count);
                l -= params_.presence_penalty;
            }
            // A penalty can overflow (a positive logit over a repetition penalty of 1e-45 is
            // +inf): sanitized again, so that the weights below never see inf - inf.
            sc.work[t] = sanitized(l);
        }
    }

    const double u = next_uniform();
    const size_t argmax = static_cast<size_t>(std::max_element(sc.work.begin(), sc.work.end()) - sc.work.begin());
    int32_t chosen = static_cast<int32_t>(argmax);
    const double max_logit = sc.work[argmax];
    // All -inf (a fully masked row) has no distribution: fall back to greedy (token 0).
    if (params_.temperature != 0.0f && max_logit != -std::numeric_limits<double>::infinity()) {
        chosen = draw(sc, max_logit, u);
    }

    SampleResult result;
    result.token = chosen;
    fill_logprobs(logits, V, chosen, result);
    if (penalized()) record_output(chosen);
    return result;
}

int32_t SequenceSampler::draw(Scratch& sc, double max_logit, double u) {
    const size_t V = vocab_;
    const float inv_t = 1.0f / params_.temperature;
    const float max_f = static_cast<float>(max_logit);
    // Weights relative to the maximum: the top token weighs 1, so min-p keeps weights >= min_p
    // (min-p's threshold is relative, hence the same before or after renormalization).
    auto weight = [&](size_t t) { return static_cast<double>(tempered_weight(sc.work[t], max_f, inv_t)); };
    const double min_w = params_.min_p;
    sc.prob.resize(V);

    // A strict total order on ids: higher (sanitized) logit first, ties to the lower id. Top-k
    // and top-p keep the ids that rank at or before a boundary id in this order.
    auto before = [&sc](int32_t a, int32_t b) {
        const float la = sc.work[static_cast<size_t>(a)], lb = sc.work[static_cast<size_t>(b)];
        return la > lb || (la == lb && a < b);
    };
    auto at = [&sc](size_t i) { return sc.idx.begin() + static_cast<std::ptrdiff_t>(i); };
    const bool top_k = params_.top_k > 0 && static_cast<size_t>(params_.top_k) < V;
    // Candidates are sc.idx[0, n) (unordered); sc.prob holds their weights, indexed by id.
    size_t n = V;
    int32_t boundary = -1;  // the last surviving id in rank order; -1: every id survives
    double z = 0;
    if (top_k) {
        // The k best ids in one pass: a heap of the best so far whose root is the worst of
        // them, so almost every id is turned away by one comparison with the root (a selection
        // over all V ids cost ~1.5 ms at 152k).
        n = static_cast<size_t>(params_.top_k);
        sc.idx.resize(n);
        std::iota(sc.idx.begin(), sc.idx.end(), 0);
        std::make_heap(sc.idx.begin(), sc.idx.end(), before);
        for (size_t t = n; t < V; ++t) {
            if (!before(static_cast<int32_t>(t), sc.idx.front())) continue;
            std::pop_heap(sc.idx.begin(), sc.idx.end(), before);
            sc.idx.back() = static_cast<int32_t>(t);
            std::push_heap(sc.idx.begin(), sc.idx.end(), before);
        }
        boundary = sc.idx.front();
        for (size_t i = 0; i < n; ++i) {
            const size_t t = static_cast<size_t>(sc.idx[i]);
            z += sc.prob[t] = weight(t);
        }
    } else {
        z = tempered_weights(sc.work.data(), V, max_f, inv_t, sc.prob.data());
        if (params_.top_p < 1.0f) {
            // Candidates for the nucleus: the ids weighing at least tau (relative to the top's
            // 1) when they already hold top_p of the mass. Weights never fall as the rank rises,
            // so those ids are the rank order's first ones and the nucleus is among them; the
            // quickselect below then runs over a few thousand ids instead of all V (for a
            // peaked distribution, a few). Else a smaller tau, else every id.
            const double needed = static_cast<double>(params_.top_p) * z;
            sc.idx.clear();
            for (const double tau : {1e-3, 1e-6}) {
                double held = 0;
                for (size_t t = 0; t < V; ++t)
                    if (sc.prob[t] >= tau) held += sc.prob[t];
                if (held < needed) continue;
                for (size_t t = 0; t < V; ++t)
                    if (sc.prob[t] >= tau) sc.idx.push_back(static_cast<int32_t>(t));
                break;
            }
            if (sc.idx.empty()) {
                sc.idx.resize(V);
                std::iota(sc.idx.begin(), sc.idx.end(), 0);
            }
            n = sc.idx.size();
        }
    }

    if (params_.top_p < 1.0f) {
        // Top-p: the smallest rank-ordered prefix whose mass reaches top_p * z. Found by a
        // quickselect on mass rather than by a sort: partition around a pivot, keep the side that
        // holds the boundary, and sort only the last few dozen candidates. Expected O(n) for any
        // distribution, peaked or flat.
        const double needed = static_cast<double>(params_.top_p) * z;
        size_t lo = 0, hi = n;  // sc.idx[0, lo) are inside the nucleus, with mass `cum`
        double cum = 0;
        constexpr size_t kSortBelow = 64;
        while (hi - lo > kSortBelow) {
            // Median of three distinct ids: the pivot ranks strictly after one of them and before
            // another, so both sides are non-empty and the range shrinks.
            int32_t a = sc.idx[lo], b = sc.idx[lo + (hi - lo) / 2], c = sc.idx[hi - 1];
            if (before(b, a)) std::swap(a, b);
            if (before(c, b)) std::swap(b, c);
            if (before(b, a)) std::swap(a, b);
            const int32_t pivot = b;
            const size_t mid = static_cast<size_t>(
                std::partition(at(lo), at(hi), [&](int32_t t) { return !before(pivot, t); }) - sc.idx.begin());
            double left = 0;
            for (size_t i = lo; i < mid; ++i) left += sc.prob[static_cast<size_t>(sc.idx[i])];
            if (cum + left >= needed) {
                hi = mid;
            } else {
                cum += left;
                lo = mid;
            }
        }
        std::sort(at(lo), at(hi), before);
        boundary = sc.idx[hi - 1];  // rounding left the mass just short: keep the whole range
        for (size_t i = lo; i < hi; ++i) {
            cum += sc.prob[static_cast<size_t>(sc.idx[i])];
            if (cum >= needed) {
                boundary = sc.idx[i];
                break;
            }
        }
    }

    // Min-p as a filter on the survivors, then one draw. The scan goes in id order, so the
    // token a seed gives does not depend on how the partitions above happened to order sc.idx.
    // With top-k every survivor is among the k candidates (the rest rank after the boundary):
    // the scans go over those, sorted by id, instead of all V ids.
    auto survives = [&](size_t t) {
        return (boundary < 0 || !before(boundary, static_cast<int32_t>(t))) && sc.prob[t] >= min_w;
    };
    if (top_k) std::sort(sc.idx.begin(), sc.idx.begin() + static_cast<std::ptrdiff_t>(n));
    const size_t scan = top_k ? n : V;
    auto id_at = [&](size_t i) { return top_k ? static_cast<size_t>(sc.idx[i]) : i; };
    double mass = 0;
    for (size_t i = 0; i < scan; ++i)
        if (survives(id_at(i))) mass += sc.prob[id_at(i)];
    const double target = u * mass;
    double cum = 0;
    int32_t chosen = -1;
    for (size_t i = 0; i < scan; ++i) {
        const size_t t = id_at(i);
        if (!survives(t) || sc.prob[t] == 0.0) continue;  // an underflowed weight is never chosen
        cum += sc.prob[t];
        chosen = static_cast<int32_t>(t);
        if (target < cum) break;
    }
    // The top-ranked id always survives with weight 1 >= min_p (tempered_weight gives the
    // maximum exactly 1), so a token was chosen. Should that ever fail, the top-ranked id is the
    // answer, not an abort: this is reached from request parameters.
    if (chosen < 0) return static_cast<int32_t>(std::max_element(sc.work.begin(), sc.work.end()) - sc.work.begin());
    return chosen;
}

void SequenceSampler::fill_logprobs(const float* logits, size_t V, int32_t chosen, SampleResult& result) const {
    // Raw log_softmax over the unmodified logits: the vectorized sum when every logit is finite,
    // else (NaN or inf logits) the plain double loop, whose propagation rules are the contract.
    float max_f = -std::numeric_limits<float>::infinity();
    bool finite = true;
    for (size_t i = 0; i < V; ++i) {
        max_f = std::max(max_f, logits[i]);
        finite &= std::isfinite(logits[i]);
    }
    double log_z;
    if (finite && V > 0) {
        log_z = log_sum_exp(logits, V, max_f);
    } else {
        const double max_raw = static_cast<double>(max_f);  // the same maximum, exactly
        double sum = 0;
        for (size_t i = 0; i < V; ++i) sum += std::exp(static_cast<double>(logits[i]) - max_raw);
        log_z = max_raw + std::log(sum);
    }
    auto raw_logprob = [&](int32_t t) {
        return static_cast<float>(static_cast<double>(logits[static_cast<size_t>(t)]) - log_z);
    };
    result.logprob = raw_logprob(chosen);
    if (params_.logprobs <= 0) return;

    // Top-n by one scan with a small sorted array (n <= kMaxLogprobs): scanning ids in increasing
    // order and inserting after equal values keeps ties in id order.
    const size_t n = std::min(V, static_cast<size_t>(params_.logprobs));
    std::array<int32_t, kMaxLogprobs> best{};
    size_t filled = 0;
    for (size_t i = 0; i < V; ++i) {
        const float l = logits[i];
        if (std::isnan(l)) continue;
        if (filled == n && !(l > logits[static_cast<size_t>(best[n - 1])])) continue;
        size_t pos = filled < n ? filled++ : n - 1;
        while (pos > 0 && l > logits[static_cast<size_t>(best[pos - 1])]) {
            best[pos] = best[pos - 1];
            --pos;
        }
        best[pos] = static_cast<int32_t>(i);
    }
    result.top.reserve(filled);
    for (size_t i = 0; i < filled; ++i) result.top.push_back({best[i], raw_logprob(best[i])});
}

}  // namespace moe
