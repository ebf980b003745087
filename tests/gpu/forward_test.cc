// The whole forward pass on the CUDA backend (weights and KV cache on the device) against the
// Hugging Face transformers fixtures, as tests/reference/transformers_match_test.cc does on the
// CPU: the prompts prefilled together as a ragged batch (one of them in two chunks, so a cached
// prefix is read), then greedy decoding together. Skips without a device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "cuda_op_fixture.h"
#include "reference/fixture.h"

namespace moe::testing {
namespace {

constexpr int kGreedySteps = 16;
constexpr double kF32Tolerance = 1e-4;
constexpr int64_t kBlockSize = 4;

class CudaForwardTest : public CudaOpTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(CudaForwardTest, RaggedBatchMatchesTransformersF32) {
    const Fixture fx = load_fixture(GetParam());
    auto model_or = MoeTransformer::load(fx.dir, be(), {.weight_dtype = WeightDType::kF32});
    ASSERT_TRUE(model_or.ok()) << model_or.status().to_string();
    MoeTransformer& model = **model_or;
    const int64_t V = model.config().vocab_size;
    const size_t S = fx.prompts.size();
    ASSERT_GE(S, 1u);
    int64_t max_tokens = 0, max_len = 0;
    for (const auto& p : fx.prompts) {
        max_tokens += static_cast<int64_t>(p.size()) + kGreedySteps;
        max_len = std::max<int64_t>(max_len, static_cast<int64_t>(p.size()));
    }
    auto cache_or = KvCache::create(
        model.backend(), model.config(),
        {.num_blocks = max_tokens / kBlockSize + static_cast<int64_t>(S) + 1, .block_size = kBlockSize});
    ASSERT_TRUE(cache_or.ok()) << cache_or.status().to_string();
    KvCache cache = std::move(cache_or).value();
    ShuffledBlocks blocks(cache.num_blocks(), 11);
    std::vector<std::vector<int32_t>> tables(S);
    std::vector<int64_t> cached(S, 0);
    std::vector<std::vector<float>> prefill(S);

    // Prefill in two steps: tokens [0, 5) then the rest, every prompt in the same batch.
    const int64_t split = std::min<int64_t>(5, max_len);
    for (auto [begin, end] : {std::pair<int64_t, int64_t>{0, split}, {split, max_len}}) {
        if (begin >= end) continue;
        BatchView batch;
        std::vector<size_t> members;
        for (size_t s = 0; s < S; ++s) {
            const int64_t len = static_cast<int64_t>(fx.prompts[s].size());
            const int64_t b = std::min(begin, len), e = std::min(end, len);
            if (b >= e) continue;
            blocks.cover(tables[s], e, kBlockSize);
            batch.sequences.push_back(
                {.token_ids = std::span<const int32_t>(fx.prompts[s].data() + b, static_cast<size_t>(e - b)),
                 .num_cached = b,
                 .block_table = tables[s],
                 .all_logits = true});
            members.push_back(s);
        }
        auto out = model.forward(batch, cache);
        ASSERT_TRUE(out.ok()) << out.status().to_string();
        for (size_t i = 0; i < members.size(); ++i) {
            const size_t s = members[i];
            prefill[s].insert(prefill[s].end(), out->row(out->row_start[i]), out->row(out->row_start[i + 1]));
            cached[s] += out->row_start[i + 1] - out->row_start[i];
        }
    }
    double worst = 0;
    std::vector<int32_t> last(S);
    std::vector<std::vector<int32_t>> tokens(S);
    for (size_t s = 0; s < S; ++s) {
        int64_t rows, vocab;
        const float* ref = fx.logits("prefill", s, &rows, &vocab);
        ASSERT_EQ(static_cast<int64_t>(prefill[s].size()), rows * vocab);
        const double e = max_rel_error(prefill[s].data(), ref, rows * vocab);
        EXPECT_LE(e, kF32Tolerance) << "prompt " << s << " prefill logits";
        worst = std::max(worst, e);
        last[s] = argmax(prefill[s].data() + (rows - 1) * V, V);
        tokens[s].push_back(last[s]);
    }
    for (int step = 1; step < kGreedySteps; ++step) {
        BatchView batch;
        for (size_t s = 0; s < S; ++s) {
            blocks.cover(tables[s], cached[s] + 1, kBlockSize);
            batch.sequences.push_back({.token_ids = std::span<const int32_t>(&last[s], 1),
                                       .num_cached = cached[s],
                                       .block_table = tables[s]});
        }
        auto out = model.forward(batch, cache);
        ASSERT_TRUE(out.ok()) << out.status().to_string();
        for (size_t s = 0; s < S; ++s) {
            const float* row = out->last_row(s);
            int64_t rows, vocab;
            const float* ref = fx.logits("greedy", s, &rows, &vocab);
            // Decode logits are comparable while our tokens equal the reference's.
            if (tokens[s] == std::vector<int32_t>(fx.greedy[s].begin(), fx.greedy[s].begin() + step)) {
                const double e = max_rel_error(row, ref + step * vocab, vocab);
                EXPECT_LE(e, kF32Tolerance) << "prompt " << s << " decode step " << step;
                worst = std::max(worst, e);
            }
            last[s] = argmax(row, V);
            tokens[s].push_back(last[s]);
            cached[s] += 1;
        }
    }
    for (size_t s = 0; s < S; ++s) EXPECT_EQ(tokens[s], fx.greedy[s]) << "prompt " << s << " greedy tokens";
    std::printf("[ figures  ] cuda %s ragged f32: max|logit-ref|/max|ref| = %.3g\n", GetParam().c_str(), worst);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaForwardTest, ::testing::ValuesIn(fixture_names()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace moe::testing
