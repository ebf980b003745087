// DeepSeek-V3 (MLA, latent KV cache, grouped routing) through the whole engine: the block
// manager, prefix caching and preemption work on the latent cache unchanged, and greedy outputs
// equal transformers' (tests/reference/fixtures/deepseek_v3*).
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

class DeepseekEngineTest : public ::testing::TestWithParam<std::string> {
protected:
    void SetUp() override { backend_ = make_cpu_backend({.num_threads = 2}); }
    std::unique_ptr<Engine> engine(EngineOptions opt) {
        auto model = MoeTransformer::load(fixture_dir(GetParam()), *backend_, {});
        EXPECT_TRUE(model.ok()) << model.status().to_string();
        auto e = Engine::create(std::move(model).value(), nullptr, opt);
        EXPECT_TRUE(e.ok()) << e.status().to_string();
        EXPECT_TRUE((*e)->start().ok());
        return std::move(e).value();
    }
    ModelConfig config() {
        auto c = load_model_config(fixture_dir(GetParam()));
        EXPECT_TRUE(c.ok()) << c.status().to_string();
        return *c;
    }
    std::unique_ptr<Backend> backend_;
};

TEST_P(DeepseekEngineTest, KvBytesPerTokenAreTheLatentRow) {
    const ModelConfig c = config();
    ASSERT_TRUE(c.is_mla());
    // One pool of (kv_lora_rank + qk_rope_head_dim) values per token per layer, not K and V per head.
    EXPECT_EQ(KvCache::bytes_per_block(c, 1, DType::kBF16),
              c.num_layers * (c.mla.kv_lora_rank + c.mla.qk_rope_head_dim) * 2);
}

TEST_P(DeepseekEngineTest, PrefixCacheHitsKeepGreedyOutputs) {
    auto e = engine({.kv_cache_bytes = 4 << 20, .kv_block_size = 4});
    const Reference ref = load_reference(GetParam());
    // The same prompts twice, one after the other: the second round reads the first round's
    // latent blocks from the prefix cache.
    for (int round = 0; round < 2; ++round) {
        for (size_t i = 0; i < ref.prompts.size(); ++i) {
            auto sink = std::make_shared<CollectSink>();
            auto id = e->submit(greedy(ref.prompts[i], 16), sink);
            ASSERT_TRUE(id.ok()) << id.status().to_string();
            ASSERT_TRUE(sink->wait());
            EXPECT_EQ(sink->tokens(), ref.greedy[i]) << "round " << round << " prompt " << i;
            const FinalEvent f = sink->final_event();
            if (round == 0) EXPECT_EQ(f.cached_prompt_tokens, 0);
            // Whole blocks of the prompt, short of its last token (which must be computed).
            if (round == 1) {
                EXPECT_GE(f.cached_prompt_tokens, 8) << "prompt " << i;
                EXPECT_LT(f.cached_prompt_tokens, static_cast<int64_t>(ref.prompts[i].size())) << "prompt " << i;
                EXPECT_EQ(f.cached_prompt_tokens % 4, 0) << "prompt " << i;
            }
        }
    }
    ASSERT_TRUE(e->wait_idle(std::chrono::seconds(5)));
    EXPECT_GT(e->load().kv_blocks_cached, 0);
}

TEST_P(DeepseekEngineTest, PreemptionUnderASmallCacheKeepsGreedyOutputs) {
    // 12 blocks of 4 tokens: three prompts of 9..30 tokens + 16 new ones cannot all run at once.
    EngineOptions opt{.kv_cache_bytes = 12 * KvCache::bytes_per_block(config(), 4, DType::kF32), .kv_block_size = 4};
    auto e = engine(opt);
    const Reference ref = load_reference(GetParam());
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

INSTANTIATE_TEST_SUITE_P(Fixtures, DeepseekEngineTest, ::testing::Values("deepseek_v3", "deepseek_v3_noq"));

}  // namespace
}  // namespace moe
