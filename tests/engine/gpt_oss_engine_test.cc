// gpt-oss (attention sinks, alternating sliding-window and full layers, clamped SwiGLU with
// biases) through the whole engine: prefix caching, preemption, and chunked prefill whose chunks
// straddle the sliding window keep transformers' greedy outputs
// (tests/reference/fixtures/gpt_oss: window 8, prompts of 9, 17 and 30 ids, 16 new tokens each).
#include <gtest/gtest.h>

#include "engine/engine.h"
#include "engine/engine_test_util.h"
#include "moe/cpu_backend.h"

namespace moe {
namespace {

using namespace moe::testing;

GenerateParams greedy(std::vector<int32_t> prompt, int64_t max_tokens) {
    GenerateParams p;
    p.prompt_ids = std::move(prompt);
    p.sampling.temperature = 0.0f;
    p.stopping.max_tokens = max_tokens;
    p.stopping.ignore_eos = true;
    return p;
}

class GptOssEngineTest : public ::testing::Test {
protected:
    void SetUp() override { backend_ = make_cpu_backend({.num_threads = 2}); }
    std::unique_ptr<Engine> engine(EngineOptions opt) {
        auto model = MoeTransformer::load(fixture_dir("gpt_oss"), *backend_, {});
        EXPECT_TRUE(model.ok()) << model.status().to_string();
        auto e = Engine::create(std::move(model).value(), nullptr, opt);
        EXPECT_TRUE(e.ok()) << e.status().to_string();
        EXPECT_TRUE((*e)->start().ok());
        return std::move(e).value();
    }
    ModelConfig config() {
        auto c = load_model_config(fixture_dir("gpt_oss"));
        EXPECT_TRUE(c.ok()) << c.status().to_string();
        return *c;
    }
    std::unique_ptr<Backend> backend_;
};

TEST_F(GptOssEngineTest, FixtureCrossesTheWindow) {
    const ModelConfig c = config();
    ASSERT_TRUE(c.gpt_oss.enabled);
    ASSERT_EQ(c.sliding_window, 8);
    EXPECT_EQ(c.window_of(0), 8);
    EXPECT_EQ(c.window_of(1), 0);
    const Reference ref = load_reference("gpt_oss");
    for (const auto& p : ref.prompts) EXPECT_GT(p.size(), 8u);
}

TEST_F(GptOssEngineTest, PrefixCacheHitsKeepGreedyOutputs) {
    auto e = engine({.kv_cache_bytes = 4 << 20, .kv_block_size = 4});
    const Reference ref = load_reference("gpt_oss");
    for (int round = 0; round < 2; ++round) {
        for (size_t i = 0; i < ref.prompts.size(); ++i) {
            auto sink = std::make_shared<CollectSink>();
            auto id = e->submit(greedy(ref.prompts[i], 16), sink);
            ASSERT_TRUE(id.ok()) << id.status().to_string();
            ASSERT_TRUE(sink->wait());
            EXPECT_EQ(sink->tokens(), ref.greedy[i]) << "round " << round << " prompt " << i;
            const FinalEvent f = sink->final_event();
            if (round == 0) EXPECT_EQ(f.cached_prompt_tokens, 0);
            if (round == 1) {
                // Cached blocks beyond the window too: the sliding layers' keys in them must be
                // masked, the full layers' keys read.
                EXPECT_GE(f.cached_prompt_tokens, 8) << "prompt " << i;
                EXPECT_LT(f.cached_prompt_tokens, static_cast<int64_t>(ref.prompts[i].size())) << "prompt " << i;
            }
        }
    }
    ASSERT_TRUE(e->wait_idle(std::chrono::seconds(5)));
    EXPECT_GT(e->load().kv_blocks_cached, 0);
}

TEST_F(GptOssEngineTest, PreemptionUnderASmallCacheKeepsGreedyOutputs) {
    EngineOptions opt{.kv_cache_bytes = 12 * KvCache::bytes_per_block(config(), 4, DType::kF32), .kv_block_size = 4};
    auto e = engine(opt);
    const Reference ref = load_reference("gpt_oss");
    std::vector<std::shared_ptr<CollectSink>> sinks;
    for (int round = 0; round < 2; ++round)
        for (size_t i = 0; i < ref.prompts.size(); ++i) {
            sinks.push_back(std::make_shared<CollectSink>());
            auto id = e->submit(greedy(ref.prompts[i], 16), sinks.back());
            ASSERT_TRUE(id.ok()) << id.status().to_string();
        }
    for (size_t k = 0; k < sinks.size(); ++k) {
        ASSERT_TRUE(sinks[k]->wait());
        EXPECT_EQ(sinks[k]->tokens(), ref.greedy[k % ref.prompts.size()]) << "request " << k;
    }
    EXPECT_GT(e->load().num_preemptions, 0);
    ASSERT_TRUE(e->wait_idle(std::chrono::seconds(5)));
    EXPECT_EQ(e->load().kv_blocks_free, e->load().kv_blocks_total);
}

// 5 tokens a step over all sequences: every prompt is prefilled in chunks of at most 5 that
// start inside, at and past the window of 8, while other sequences decode beside them.
TEST_F(GptOssEngineTest, SmallChunksAcrossTheWindowKeepGreedyOutputs) {
    EngineOptions opt{.kv_cache_bytes = 4 << 20, .kv_block_size = 4, .prefix_caching = false};
    opt.scheduler.max_batched_tokens = 5;
    auto e = engine(opt);
    const Reference ref = load_reference("gpt_oss");
    std::vector<std::shared_ptr<CollectSink>> sinks;
    for (size_t i = 0; i < ref.prompts.size(); ++i) {
        sinks.push_back(std::make_shared<CollectSink>());
        auto id = e->submit(greedy(ref.prompts[i], 16), sinks.back());
        ASSERT_TRUE(id.ok()) << id.status().to_string();
    }
    for (size_t k = 0; k < sinks.size(); ++k) {
        ASSERT_TRUE(sinks[k]->wait());
        EXPECT_EQ(sinks[k]->tokens(), ref.greedy[k]) << "prompt " << k;
    }
}

}  // namespace
}  // namespace moe
