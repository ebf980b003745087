#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <set>

namespace moe {
namespace {

SamplingParams params(float temperature, std::optional<uint64_t> seed = 1) {
    SamplingParams p;
    p.temperature = temperature;
    p.seed = seed;
    return p;
}

TEST(Sampler, GreedyIsArgmaxWithTiesToTheLowestId) {
    SequenceSampler s(params(0), {});
    const float logits[] = {0.5f, 2.0f, -1.0f, 2.0f, 1.9f};
    EXPECT_EQ(s.sample(logits, 5).token, 1);
}

TEST(Sampler, LogprobsAreRawLogSoftmaxInDouble) {
    SamplingParams p = params(0);
    p.logprobs = 3;
    SequenceSampler s(p, {});
    const float logits[] = {1.0f, 3.0f, 2.0f, -4.0f};
    const SampleResult r = s.sample(logits, 4);
    double z = 0;
    for (float l : logits) z += std::exp(static_cast<double>(l));
    EXPECT_EQ(r.token, 1);
    EXPECT_NEAR(r.logprob, 3.0 - std::log(z), 1e-6);
    ASSERT_EQ(r.top.size(), 3u);
    EXPECT_EQ(r.top[0].token, 1);
    EXPECT_EQ(r.top[1].token, 2);
    EXPECT_EQ(r.top[2].token, 0);
    EXPECT_NEAR(r.top[2].logprob, 1.0 - std::log(z), 1e-6);
}

TEST(Sampler, SameSeedSameTokensDifferentSeedDifferentTokens) {
    std::vector<float> logits(50);
    for (size_t i = 0; i < logits.size(); ++i) logits[i] = std::sin(static_cast<float>(i)) * 2;
    auto draw = [&](uint64_t seed) {
        SequenceSampler s(params(1.0f, seed), {});
        std::vector<int32_t> out;
        for (int i = 0; i < 40; ++i) out.push_back(s.sample(logits.data(), 50).token);
        return out;
    };
    EXPECT_EQ(draw(7), draw(7));
    EXPECT_NE(draw(7), draw(8));
}

// Empirical frequencies over many draws follow softmax(logits / T): chi-square with 4 degrees of
// freedom stays below 20 (p ~ 5e-4) for a fixed seed.
TEST(Sampler, FrequenciesFollowTheTemperedSoftmax) {
    const float logits[] = {1.0f, 0.0f, -1.0f, 0.5f, 2.0f};
    for (float t : {0.5f, 1.0f, 2.0f}) {
        SequenceSampler s(params(t, 1234), {});
        std::vector<int> counts(5, 0);
        const int n = 20000;
        for (int i = 0; i < n; ++i) ++counts[static_cast<size_t>(s.sample(logits, 5).token)];
        double z = 0;
        for (float l : logits) z += std::exp(l / t);
        double chi2 = 0;
        for (int i = 0; i < 5; ++i) {
            const double expected = n * std::exp(logits[i] / t) / z;
            chi2 +=
                (counts[static_cast<size_t>(i)] - expected) * (counts[static_cast<size_t>(i)] - expected) / expected;
        }
        EXPECT_LT(chi2, 20.0) << "temperature " << t;
    }
}

TEST(Sampler, TopKNeverLeavesTheKLargest) {
    SamplingParams p = params(5.0f, 3);
    p.top_k = 2;
    SequenceSampler s(p, {});
    const float logits[] = {0.1f, 3.0f, 0.2f, 2.9f, 0.0f};
    std::set<int32_t> seen;
    for (int i = 0; i < 2000; ++i) seen.insert(s.sample(logits, 5).token);
    EXPECT_EQ(seen, (std::set<int32_t>{1, 3}));
}

TEST(Sampler, TopPKeepsTheSmallestPrefixReachingP) {
    // probabilities 0.5, 0.3, 0.2 (logits are their logs): top_p 0.75 keeps {0, 1}; 0.8 too;
    // 0.81 keeps all three.
    const float logits[] = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
    auto support = [&](float top_p) {
        SamplingParams p = params(1.0f, 11);
        p.top_p = top_p;
        SequenceSampler s(p, {});
        std::set<int32_t> seen;
        for (int i = 0; i < 3000; ++i) seen.insert(s.sample(logits, 3).token);
        return seen;
    };
    EXPECT_EQ(support(0.4f), (std::set<int32_t>{0}));
    EXPECT_EQ(support(0.75f), (std::set<int32_t>{0, 1}));
    EXPECT_EQ(support(0.81f), (std::set<int32_t>{0, 1, 2}));
}

TEST(Sampler, MinPDropsTokensBelowTheThreshold) {
    // p = 0.5, 0.3, 0.2: min_p 0.5 keeps tokens with p >= 0.25 -> {0, 1}.
    const float logits[] = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
    SamplingParams p = params(1.0f, 5);
    p.min_p = 0.5f;
    SequenceSampler s(p, {});
    std::set<int32_t> seen;
    for (int i = 0; i < 3000; ++i) seen.insert(s.sample(logits, 3).token);
    EXPECT_EQ(seen, (std::set<int32_t>{0, 1}));
}

TEST(Sampler, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogits) {
    // Token 0 (logit 2.0) is in the prompt: 2.0 / 4 = 0.5 < 1.0 of token 1, so greedy picks 1.
    SamplingParams p = params(0);
    p.repetition_penalty = 4.0f;
    const int32_t prompt[] = {0, 2};
    SequenceSampler s(p, prompt);
    const float logits[] = {2.0f, 1.0f, -0.1f, -0.3f};
    EXPECT_EQ(s.sample(logits, 4).token, 1);
    // Token 2 (in the prompt, -0.1 * 4 = -0.4) now ranks below token 3 (-0.3); token 1 was output
    // and is penalized too (1.0 / 4 = 0.25); token 0: 0.5.
    const float logits2[] = {-5.0f, -5.0f, -0.1f, -0.3f};
    EXPECT_EQ(s.sample(logits2, 4).token, 3);
}

TEST(Sampler, PresenceAndFrequencyPenaltiesCountOutputTokens) {
    SamplingParams p = params(0);
    p.frequency_penalty = 0.6f;
    p.presence_penalty = 0.5f;
    SequenceSampler s(p, {});
    s.observe(0);
    s.observe(0);
    // token 0: 3.0 - 0.5 - 2 * 0.6 = 1.3 < 1.4 of token 1
    const float logits[] = {3.0f, 1.4f, 0.0f};
    EXPECT_EQ(s.sample(logits, 3).token, 1);
    // token 1 now: 1.4 - 0.5 - 0.6 = 0.3; token 0 still 1.3
    EXPECT_EQ(s.sample(logits, 3).token, 0);
}

// Reference helpers, written independently of the sampler: double softmax over a candidate set.
std::vector<double> softmax(const std::vector<double>& x) {
    const double m = *std::max_element(x.begin(), x.end());
    std::vector<double> p(x.size());
    double z = 0;
    for (size_t i = 0; i < x.size(); ++i) z += p[i] = std::exp(x[i] - m);
    for (double& v : p) v /= z;
    return p;
}

// Chi-square statistic of `counts` against `probs` (tokens with probability 0 must not appear).
double chi_square(const std::map<int32_t, int>& counts, const std::map<int32_t, double>& probs, int n) {
    double chi2 = 0;
    for (const auto& [t, p] : probs) {
        auto it = counts.find(t);
        const double c = it == counts.end() ? 0 : it->second;
        chi2 += (c - n * p) * (c - n * p) / (n * p);
    }
    for (const auto& [t, c] : counts) EXPECT_TRUE(probs.count(t)) << "token " << t << " sampled " << c << " times";
    return chi2;
}

// Upper bound for a chi-square with `df` degrees of freedom: mean + 5 standard deviations
// (tail probability well below 1e-4 for the df used here), so a correct sampler with a fixed
// seed passes and a wrong distribution (off by a few percent in any bin) fails.
double chi_square_bound(size_t df) {
    return static_cast<double>(df) + 5 * std::sqrt(2.0 * static_cast<double>(df));
}

std::map<int32_t, int> draw_counts(SequenceSampler& s, const std::vector<float>& logits, int n) {
    std::map<int32_t, int> counts;
    for (int i = 0; i < n; ++i) ++counts[s.sample(logits.data(), static_cast<int64_t>(logits.size())).token];
    return counts;
}

TEST(Sampler, GreedyMatchesANaiveArgmaxOnALargeVocabulary) {
    std::mt19937 gen(42);
    std::normal_distribution<float> nd(0, 3);
    std::vector<float> logits(151936);
    for (float& l : logits) l = nd(gen);
    logits[777] = 40.0f;
    logits[99999] = 40.0f;  // tie: the lower id wins
    SequenceSampler s(params(0), {});
    EXPECT_EQ(s.sample(logits.data(), static_cast<int64_t>(logits.size())).token, 777);
    logits[777] = 39.0f;
    EXPECT_EQ(s.sample(logits.data(), static_cast<int64_t>(logits.size())).token, 99999);
}

TEST(Sampler, ASeededSequenceDoesNotDependOnOtherRequests) {
    std::vector<float> logits(300);
    for (size_t i = 0; i < logits.size(); ++i) logits[i] = std::cos(static_cast<float>(i) * 0.37f) * 3;
    SamplingParams p = params(0.8f, 99);
    p.top_p = 0.9f;
    p.top_k = 100;
    p.repetition_penalty = 1.3f;
    const int32_t prompt[] = {3, 4, 5};
    SequenceSampler alone(p, prompt);
    std::vector<int32_t> expected;
    for (int i = 0; i < 50; ++i) expected.push_back(alone.sample(logits.data(), 300).token);

    // Same request interleaved with two others that sample from other logits with other seeds.
    SequenceSampler mine(p, prompt), other1(params(1.0f, 98), {}), other2(params(0.5f), prompt);
    std::vector<float> other_logits(300, 0.0f);
    std::vector<int32_t> got;
    for (int i = 0; i < 50; ++i) {
        other1.sample(other_logits.data(), 300);
        got.push_back(mine.sample(logits.data(), 300).token);
        other2.sample(logits.data(), 300);
        other2.sample(other_logits.data(), 300);
    }
    EXPECT_EQ(got, expected);
}

TEST(Sampler, TopKFrequenciesFollowTheRenormalizedSoftmax) {
    const std::vector<float> logits = {0.3f, 2.0f, -1.0f, 1.5f, 1.0f, 0.9f, -3.0f};
    const float t = 1.5f;
    SamplingParams p = params(t, 2024);
    p.top_k = 4;  // keeps ids 1, 3, 4, 5
    SequenceSampler s(p, {});
    const int n = 20000;
    const auto counts = draw_counts(s, logits, n);
    const std::vector<int32_t> kept = {1, 3, 4, 5};
    std::vector<double> x;
    for (int32_t id : kept) x.push_back(logits[static_cast<size_t>(id)] / static_cast<double>(t));
    const auto pr = softmax(x);
    std::map<int32_t, double> probs;
    for (size_t i = 0; i < kept.size(); ++i) probs[kept[i]] = pr[i];
    EXPECT_LT(chi_square(counts, probs, n), chi_square_bound(3));
}

TEST(Sampler, TopKKeepsExactlyKWithTiesToTheLowestId) {
    SamplingParams p = params(1.0f, 8);
    p.top_k = 2;
    SequenceSampler s(p, {});
    const std::vector<float> logits = {1.0f, 2.0f, 2.0f, 2.0f, 1.5f};
    std::set<int32_t> seen;
    for (const auto& [t, c] : draw_counts(s, logits, 2000)) seen.insert(t);
    EXPECT_EQ(seen, (std::set<int32_t>{1, 2}));
}

// Top-p without top-k on a vocabulary whose nucleus (a few hundred tokens) is far larger than
// the range the sampler's mass quickselect finishes with a sort: the support is exactly the reference nucleus (computed
// with a full sort here) and the frequencies follow the renormalized nucleus.
TEST(Sampler, TopPOverALargeVocabularyMatchesAFullSortReference) {
    const size_t V = 5000;
    std::vector<int32_t> perm(V);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), std::mt19937(7));
    std::vector<float> logits(V);
    for (size_t rank = 0; rank < V; ++rank)
        logits[static_cast<size_t>(perm[rank])] = -0.002f * static_cast<float>(rank);
    const float top_p = 0.5f;

    std::vector<double> x(logits.begin(), logits.end());
    const auto pr = softmax(x);
    std::vector<int32_t> order(V);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(),
              [&](int32_t a, int32_t b) { return pr[static_cast<size_t>(a)] > pr[static_cast<size_t>(b)]; });
    std::vector<int32_t> nucleus;
    double cum = 0;
    for (int32_t t : order) {
        nucleus.push_back(t);
        cum += pr[static_cast<size_t>(t)];
        if (cum >= top_p) break;
    }
    ASSERT_GT(nucleus.size(), 256u);  // several partition rounds before the final sort
    ASSERT_LT(nucleus.size(), 1024u);
    std::map<int32_t, double> probs;
    for (int32_t t : nucleus) probs[t] = pr[static_cast<size_t>(t)] / cum;

    SamplingParams p = params(1.0f, 31337);
    p.top_p = top_p;
    SequenceSampler s(p, {});
    const int n = 40000;
    const auto counts = draw_counts(s, logits, n);
    EXPECT_LT(chi_square(counts, probs, n), chi_square_bound(nucleus.size() - 1));
    // The first token past the boundary never shows up, the last one inside does.
    EXPECT_EQ(counts.count(order[nucleus.size()]), 0u);
    EXPECT_EQ(counts.count(nucleus.back()), 1u);
}

TEST(Sampler, TopPBoundaryOnAHandComputedDistribution) {
    // Probabilities 0.4, 0.3, 0.2, 0.1 (ids shuffled): top_p 0.69 -> {a, b}; 0.71 -> {a, b, c};
    // 0.39 -> {a}.
    const std::vector<float> logits = {std::log(0.2f), std::log(0.4f), std::log(0.1f), std::log(0.3f)};
    auto support = [&](float top_p) {
        SamplingParams p = params(1.0f, 17);
        p.top_p = top_p;
        SequenceSampler s(p, {});
        std::set<int32_t> seen;
        for (const auto& [t, c] : draw_counts(s, logits, 4000)) seen.insert(t);
        return seen;
    };
    EXPECT_EQ(support(0.39f), (std::set<int32_t>{1}));
    EXPECT_EQ(support(0.69f), (std::set<int32_t>{1, 3}));
    EXPECT_EQ(support(0.71f), (std::set<int32_t>{1, 3, 0}));
    EXPECT_EQ(support(1.0f), (std::set<int32_t>{0, 1, 2, 3}));
}

TEST(Sampler, MinPIsAppliedAfterTemperatureAndAfterTopP) {
    // Probabilities 0.5, 0.3, 0.2. At T = 1, min_p 0.5 keeps p >= 0.25: {0, 1}. At T = 4 the
    // tempered probabilities are proportional to 1, 0.88, 0.80: all three are kept.
    const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
    auto support = [&](float t, float top_p) {
        SamplingParams p = params(t, 5);
        p.min_p = 0.5f;
        p.top_p = top_p;
        SequenceSampler s(p, {});
        std::set<int32_t> seen;
        for (const auto& [tok, c] : draw_counts(s, logits, 3000)) seen.insert(tok);
        return seen;
    };
    EXPECT_EQ(support(1.0f, 1.0f), (std::set<int32_t>{0, 1}));
    EXPECT_EQ(support(4.0f, 1.0f), (std::set<int32_t>{0, 1, 2}));
    EXPECT_EQ(support(4.0f, 0.5f), (std::set<int32_t>{0, 1}));  // top-p first: 0.37 + 0.33 >= 0.5
}

TEST(Sampler, MinPFrequenciesFollowTheRenormalizedSurvivors) {
    const std::vector<float> logits = {0.0f, 1.0f, -0.5f, 0.8f, -2.0f};
    SamplingParams p = params(1.0f, 77);
    p.min_p = 0.4f;  // weights relative to the max: 0.37, 1, 0.22, 0.82, 0.05 -> keeps 1, 3
    SequenceSampler s(p, {});
    const int n = 20000;
    const auto counts = draw_counts(s, logits, n);
    const auto pr = softmax({1.0, 0.8});
    EXPECT_LT(chi_square(counts, {{1, pr[0]}, {3, pr[1]}}, n), chi_square_bound(1));
}

TEST(Sampler, PenaltiesChangeTheLogitsExactlyAsDefined) {
    SamplingParams p = params(0);
    p.repetition_penalty = 2.0f;
    p.frequency_penalty = 0.5f;
    p.presence_penalty = 0.25f;
    const int32_t prompt[] = {0, 1, 1, 7 /* outside the vocabulary: ignored */};
    SequenceSampler s(p, prompt);
    s.observe(2);  // forced before the first sample: still counted
    s.observe(2);
    s.observe(-1);  // ignored
    const std::vector<float> logits = {3.0f, -1.0f, 4.0f, 1.0f, 0.0f, -2.0f};
    const SampleResult r = s.sample(logits.data(), 6);
    const auto out = s.processed_logits();
    ASSERT_EQ(out.size(), 6u);
    EXPECT_EQ(out[0], 1.5f);                         // prompt, positive: 3 / 2
    EXPECT_EQ(out[1], -2.0f);                        // prompt, negative: -1 * 2
    EXPECT_EQ(out[2], 4.0f / 2 - 2 * 0.5f - 0.25f);  // output twice: 0.75
    EXPECT_EQ(out[3], 1.0f);                         // unseen
    EXPECT_EQ(out[4], 0.0f);
    EXPECT_EQ(out[5], -2.0f);
    EXPECT_EQ(r.token, 0);  // 1.5 is the largest after penalties (raw argmax was 2)
    // Token 0 was output once now and is in the prompt: 3 / 2 - 0.5 - 0.25 = 0.75.
    s.sample(logits.data(), 6);
    EXPECT_EQ(s.processed_logits()[0], 0.75f);
    EXPECT_EQ(s.processed_logits()[3], 1.0f);
}

TEST(Sampler, NoPenaltiesMeansUntouchedLogits) {
    SequenceSampler s(params(0), std::vector<int32_t>{0, 1, 2});
    s.observe(1);
    const std::vector<float> logits = {3.0f, -1.0f, 4.0f};
    s.sample(logits.data(), 3);
    EXPECT_TRUE(std::equal(logits.begin(), logits.end(), s.processed_logits().begin()));
}

TEST(Sampler, LogprobsOnALargeVocabularyEqualDoubleLogSoftmax) {
    std::mt19937 gen(3);
    std::normal_distribution<float> nd(0, 4);
    std::vector<float> logits(32000);
    for (float& l : logits) l = nd(gen);
    logits[5] = logits[6] = 30.0f;  // a tie at the top: lower id first
    std::vector<double> lp(logits.size());
    double m = *std::max_element(logits.begin(), logits.end()), z = 0;
    for (float l : logits) z += std::exp(l - m);
    for (size_t i = 0; i < logits.size(); ++i) lp[i] = logits[i] - m - std::log(z);
    std::vector<int32_t> order(logits.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
        return logits[static_cast<size_t>(a)] > logits[static_cast<size_t>(b)];
    });

    // Temperature and penalties change what is sampled, not the reported (raw) logprobs.
    SamplingParams p = params(0.7f, 4);
    p.logprobs = kMaxLogprobs;
    p.repetition_penalty = 1.5f;
    p.top_k = 40;
    SequenceSampler s(p, std::vector<int32_t>{5});
    for (int step = 0; step < 3; ++step) {
        const SampleResult r = s.sample(logits.data(), static_cast<int64_t>(logits.size()));
        EXPECT_NEAR(r.logprob, lp[static_cast<size_t>(r.token)], 1e-5);
        ASSERT_EQ(r.top.size(), static_cast<size_t>(kMaxLogprobs));
        for (size_t i = 0; i < r.top.size(); ++i) {
            EXPECT_EQ(r.top[i].token, order[i]) << "rank " << i;
            EXPECT_NEAR(r.top[i].logprob, lp[static_cast<size_t>(order[i])], 1e-5) << "rank " << i;
        }
    }
    EXPECT_EQ(s.sample(logits.data(), static_cast<int64_t>(logits.size())).top[0].token, 5);
}

// The chosen token's logprob over a Qwen3-sized vocabulary with a wide spread (many logits
// more than 87 below the maximum, where the f32 exp is clamped) against log_softmax in double.
TEST(Sampler, ChosenLogprobOnA152kVocabularyWithAWideSpread) {
    std::mt19937 gen(11);
    std::normal_distribution<float> nd(0, 30);
    std::vector<float> logits(151936);
    for (float& l : logits) l = nd(gen);
    const double m = *std::max_element(logits.begin(), logits.end());
    double z = 0;
    for (float l : logits) z += std::exp(static_cast<double>(l) - m);
    for (float temperature : {0.0f, 1.0f}) {
        SequenceSampler s(params(temperature, 9), {});
        for (int step = 0; step < 4; ++step) {
            const SampleResult r = s.sample(logits.data(), static_cast<int64_t>(logits.size()));
            const double want = static_cast<double>(logits[static_cast<size_t>(r.token)]) - m - std::log(z);
            EXPECT_NEAR(r.logprob, want, 1e-6 * (1 + std::abs(want))) << "token " << r.token;
        }
    }
}

TEST(Sampler, LogprobsFewerThanRequestedOnATinyVocabulary) {
    SamplingParams p = params(0);
    p.logprobs = 5;
    SequenceSampler s(p, {});
    const float logits[] = {0.0f, 1.0f};
    const SampleResult r = s.sample(logits, 2);
    ASSERT_EQ(r.top.size(), 2u);
    EXPECT_EQ(r.top[0].token, 1);
    EXPECT_NEAR(std::exp(r.top[0].logprob) + std::exp(r.top[1].logprob), 1.0, 1e-6);
}

// A broken model row must not break the sorts (NaN makes comparisons inconsistent) or be chosen.
TEST(Sampler, NanAndInfiniteLogitsAreHandled) {
    std::vector<float> logits(1000, 0.0f);
    for (size_t i = 0; i < logits.size(); i += 3) logits[i] = std::numeric_limits<float>::quiet_NaN();
    logits[10] = 5.0f;
    logits[11] = -std::numeric_limits<float>::infinity();
    for (int variant = 0; variant < 4; ++variant) {
        SamplingParams p = params(variant == 0 ? 0.0f : 1.0f, 12);
        if (variant == 1) p.top_k = 50;
        if (variant == 2) p.top_p = 0.9f;
        if (variant == 3) p.min_p = 0.01f;
        SequenceSampler s(p, {});
        for (int i = 0; i < 200; ++i) {
            const int32_t t = s.sample(logits.data(), 1000).token;
            EXPECT_FALSE(t % 3 == 0 || t == 11) << "variant " << variant << " chose " << t;
        }
    }
    logits[500] = std::numeric_limits<float>::infinity();
    SequenceSampler s(params(1.0f, 1), {});
    for (int i = 0; i < 50; ++i) EXPECT_EQ(s.sample(logits.data(), 1000).token, 500);
}

// Not an assertion on speed (the machine is shared), a figure for the report: one sample() on a
// Qwen3-sized vocabulary.
TEST(Sampler, TimingOnA152kVocabulary) {
    std::mt19937 gen(5);
    std::normal_distribution<float> nd(0, 2);
    std::vector<float> logits(151936);
    for (float& l : logits) l = nd(gen);
    struct Case {
        const char* name;
        SamplingParams p;
    };
    std::vector<Case> cases(5);
    cases[0] = {"greedy", params(0)};
    cases[1] = {"temperature only", params(0.8f)};
    cases[2] = {"top_k=50 top_p=0.9", params(0.8f)};
    cases[2].p.top_k = 50;
    cases[2].p.top_p = 0.9f;
    cases[3] = {"top_p=0.9 (no top_k)", params(0.8f)};
    cases[3].p.top_p = 0.9f;
    cases[4] = {"penalties + logprobs=20", params(0.8f)};
    cases[4].p.repetition_penalty = 1.1f;
    cases[4].p.frequency_penalty = 0.5f;
    cases[4].p.logprobs = 20;
    for (const Case& c : cases) {
        SequenceSampler s(c.p, std::vector<int32_t>(2000, 17));
        s.sample(logits.data(), static_cast<int64_t>(logits.size()));  // first call sizes buffers
        const int reps = 20;
        const auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < reps; ++i) s.sample(logits.data(), static_cast<int64_t>(logits.size()));
        const double ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / reps;
        std::printf("  sample() on 151936 logits, %-26s %7.3f ms\n", c.name, ms);
    }
}

TEST(Sampler, ValidateNamesTheFieldAndTheLimit) {
    auto check = [](SamplingParams p, const std::string& needle) {
        Status s = validate(p);
        EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << needle;
        EXPECT_NE(s.message().find(needle), std::string::npos) << s.message();
    };
    SamplingParams p;
    EXPECT_TRUE(validate(p).ok());
    p.temperature = NAN;
    check(p, "temperature");
    p = {};
    p.temperature = -0.5f;
    check(p, "temperature");
    p = {};
    p.top_p = 0;
    check(p, "top_p must be in (0, 1]");
    p = {};
    p.top_p = 1.5f;
    check(p, "top_p");
    p = {};
    p.top_k = -2;
    check(p, "top_k");
    p = {};
    p.logprobs = 21;
    check(p, "logprobs must be in [0, 20]");
    p = {};
    p.min_p = 2;
    check(p, "min_p");
    p = {};
    p.repetition_penalty = 0;
    check(p, "repetition_penalty must be in (0, 10]");
    p = {};
    p.repetition_penalty = 10.5f;
    check(p, "repetition_penalty");
    p = {};
    p.presence_penalty = -2.5f;
    check(p, "presence_penalty must be in [-2, 2]");
    p = {};
    p.frequency_penalty = NAN;
    check(p, "frequency_penalty must be in [-2, 2]");
    p = {};
    p.top_p = NAN;
    check(p, "top_p");
    p = {};
    p.min_p = NAN;
    check(p, "min_p must be in [0, 1]");
    p = {};
    p.temperature = INFINITY;
    check(p, "temperature must be finite and in [0, 100]");
    p = {};
    p.temperature = 101;
    check(p, "[0, 100]");
    p = {};
    p.logprobs = -1;
    check(p, "logprobs");
    p = {};
    p.top_k = -2;
    check(p, "top_k must be -1 or 0 (off) or >= 1, got -2");
    // The edges are valid.
    p = {};
    p.temperature = 0;
    p.top_k = 0;
    p.top_p = 1;
    p.min_p = 1;
    p.repetition_penalty = 10;
    p.presence_penalty = -2;
    p.frequency_penalty = 2;
    p.logprobs = 20;
    EXPECT_TRUE(validate(p).ok());
}

// ---- issue 18 defect A: no accepted parameter and no finite logit row breaks the sampler ---------
//
// Before the fix, a temperature whose reciprocal overflows (below ~2.94e-39) made the top token's
// weight 0 * inf = NaN, and a repetition penalty of 1e-45 turned a positive logit into +inf (its
// weight inf - inf = NaN): no candidate survived and MOE_CHECK aborted the process.

// Every combination of the filters, for one parameter set under test.
std::vector<SamplingParams> filter_variants(SamplingParams base) {
    std::vector<SamplingParams> out;
    for (int variant = 0; variant < 6; ++variant) {
        SamplingParams p = base;
        if (variant == 1) p.top_k = 3;
        if (variant == 2) p.top_p = 0.5f;
        if (variant == 3) p.min_p = 0.5f;
        if (variant == 4) {
            p.top_k = 2;
            p.top_p = 1e-45f;
            p.min_p = 1.0f;
        }
        if (variant == 5) p.logprobs = kMaxLogprobs;
        out.push_back(p);
    }
    return out;
}

TEST(SamplerTotal, TemperaturesWhoseReciprocalOverflowsTakeTheTopToken) {
    const float logits[] = {0.5f, 2.0f, -1.0f, 1.999f, 1.9f, -std::numeric_limits<float>::infinity()};
    for (float t : {1e-45f, 1e-40f, 2.9e-39f, 2.95e-39f, 1e-38f, std::numeric_limits<float>::min(), 1e-30f}) {
        SamplingParams base = params(t, 3);
        ASSERT_TRUE(validate(base).ok()) << t;
        for (const SamplingParams& p : filter_variants(base)) {
            SequenceSampler s(p, {});
            for (int i = 0; i < 20; ++i) {
                const SampleResult r = s.sample(logits, 6);
                EXPECT_EQ(r.token, 1) << "temperature " << t << " top_k " << p.top_k << " top_p " << p.top_p;
                EXPECT_TRUE(std::isfinite(r.logprob)) << t;
            }
        }
    }
}

TEST(SamplerTotal, TinyTemperatureDrawsAmongExactTiesOnly) {
    const float logits[] = {0.5f, 2.0f, -1.0f, 2.0f, 1.9999999f};
    SequenceSampler s(params(1e-45f, 9), {});
    std::set<int32_t> seen;
    for (int i = 0; i < 200; ++i) seen.insert(s.sample(logits, 5).token);
    EXPECT_EQ(seen, (std::set<int32_t>{1, 3}));  // the limit of the tempered softmax as T -> 0
}

TEST(SamplerTotal, DenormalRepetitionPenaltyNeverAborts) {
    // Prompt tokens 1 and 3 have positive logits: divided by 1e-45 they overflow. Token 2's
    // negative logit times 1e-45 becomes ~0 and must not win over them.
    const float logits[] = {-3.0f, 1.0f, -0.5f, 2.0f, 0.25f, -std::numeric_limits<float>::infinity()};
    const std::vector<int32_t> prompt = {1, 3, 2, 5};
    for (float t : {0.0f, 1e-45f, 0.7f, 1.0f, 100.0f}) {
        SamplingParams base = params(t, 5);
        base.repetition_penalty = 1e-45f;
        base.frequency_penalty = -2.0f;
        base.presence_penalty = -2.0f;
        ASSERT_TRUE(validate(base).ok());
        for (const SamplingParams& p : filter_variants(base)) {
            SequenceSampler s(p, prompt);
            for (int i = 0; i < 20; ++i) {
                const int32_t tok = s.sample(logits, 6).token;
                EXPECT_TRUE(tok == 1 || tok == 3) << "temperature " << t << " top_k " << p.top_k << " chose " << tok;
                for (float l : s.processed_logits()) EXPECT_FALSE(std::isnan(l));
            }
        }
    }
}

TEST(SamplerTotal, HugeAndOneSidedLogitRowsGiveAValidToken) {
    constexpr float kInf = std::numeric_limits<float>::infinity();
    constexpr float kMax = std::numeric_limits<float>::max();
    struct Row {
        std::vector<float> logits;
        std::set<int32_t> allowed;
    };
    const std::vector<Row> rows = {
        {{1e30f, -1e30f, 1e30f, 0.0f}, {0, 2}}, {{kMax, -kMax, 0.0f, kMax}, {0, 3}},
        {{-kMax, -kMax, -1e37f, -kMax}, {2}},   {{-kInf, -kInf, 7.0f, -kInf, -kInf}, {2}},
        {{-kInf, -kInf, -1e30f, -kInf}, {2}},   {{-kInf, -kInf, -kInf}, {0}},  // fully masked: greedy's answer, token 0
        {{kInf, kInf, 0.0f}, {0, 1}},
    };
    for (const Row& row : rows) {
        const int64_t vocab = static_cast<int64_t>(row.logits.size());
        for (float t : {0.0f, 1e-45f, 1e-38f, 1.0f, 100.0f})
            for (float rp : {1.0f, 1e-45f, 10.0f}) {
                // Every id in the prompt (a fresh sampler per draw, so that its own outputs are
                // not penalized again). The penalty is monotone but may squash a row's spread
                // (x 1e-45) or saturate it (x 10), so under a penalty the check is: a finite
                // processed logit was chosen (any, if every one is -inf), and the largest one
                // when the temperature is 0 or tiny.
                std::vector<int32_t> prompt(row.logits.size());
                std::iota(prompt.begin(), prompt.end(), 0);
                for (int i = 0; i < 10; ++i) {
                    SamplingParams base = params(t, 11 + static_cast<uint64_t>(i));
                    base.repetition_penalty = rp;
                    for (const SamplingParams& p : filter_variants(base)) {
                        SequenceSampler s(p, prompt);
                        const int32_t tok = s.sample(row.logits.data(), vocab).token;
                        const std::string what = "row[0] " + std::to_string(row.logits[0]) + " temperature " +
                                                 std::to_string(t) + " repetition_penalty " + std::to_string(rp) +
                                                 " chose " + std::to_string(tok);
                        ASSERT_TRUE(tok >= 0 && tok < vocab) << what;
                        if (rp == 1.0f) {
                            EXPECT_TRUE(row.allowed.count(tok)) << what;
                            continue;
                        }
                        const std::vector<float> work(s.processed_logits().begin(), s.processed_logits().end());
                        const float best = *std::max_element(work.begin(), work.end());
                        if (best == -kInf) continue;
                        EXPECT_NE(work[static_cast<size_t>(tok)], -kInf) << what;
                        if (t < 1e-30f) EXPECT_EQ(work[static_cast<size_t>(tok)], best) << what;
                    }
                }
            }
    }
}

}  // namespace
}  // namespace moe
