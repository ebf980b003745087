#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
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
            chi2 += (counts[static_cast<size_t>(i)] - expected) * (counts[static_cast<size_t>(i)] - expected) / expected;
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
    check(p, "repetition_penalty");
}

}  // namespace
}  // namespace moe
