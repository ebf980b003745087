// The engine loop end to end on the CPU backend: real model, real scheduler, sampler and stops.
#include "engine/engine.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>

#include "engine/engine_test_util.h"
#include "model/demo_model.h"
#include "moe/cpu_backend.h"

namespace moe {
namespace {

using namespace moe::testing;

GenerateParams greedy_params(std::vector<int32_t> prompt, int64_t max_tokens) {
    GenerateParams p;
    p.prompt_ids = std::move(prompt);
    p.sampling.temperature = 0.0f;
    p.stopping.max_tokens = max_tokens;
    p.stopping.ignore_eos = true;
    return p;
}

class EngineTest : public ::testing::Test {
protected:
    void SetUp() override { backend_ = make_cpu_backend({.num_threads = 2}); }
    std::unique_ptr<Engine> fixture_engine(const std::string& name, EngineOptions opt) {
        auto model = MoeTransformer::load(fixture_dir(name), *backend_, {});
        EXPECT_TRUE(model.ok()) << model.status().to_string();
        auto engine = Engine::create(std::move(model).value(), nullptr, opt);
        EXPECT_TRUE(engine.ok()) << engine.status().to_string();
        EXPECT_TRUE((*engine)->start().ok());
        return std::move(engine).value();
    }
    std::unique_ptr<Backend> backend_;
};

TEST_F(EngineTest, ConcurrentGreedyRequestsEqualTransformers) {
    auto engine = fixture_engine("qwen3_moe", {.kv_cache_bytes = 4 << 20});
    const Reference ref = load_reference("qwen3_moe");
    std::vector<std::shared_ptr<CollectSink>> sinks;
    for (size_t i = 0; i < ref.prompts.size(); ++i) {
        sinks.push_back(std::make_shared<CollectSink>());
        auto id = engine->submit(greedy_params(ref.prompts[i], 16), sinks.back());
        ASSERT_TRUE(id.ok()) << id.status().to_string();
    }
    for (size_t i = 0; i < sinks.size(); ++i) {
        ASSERT_TRUE(sinks[i]->wait());
        EXPECT_EQ(sinks[i]->tokens(), ref.greedy[i]) << "prompt " << i;
        const FinalEvent f = sinks[i]->final_event();
        EXPECT_EQ(f.reason, FinishReason::kLength);
        EXPECT_EQ(f.completion_tokens, 16);
        EXPECT_EQ(f.prompt_tokens, static_cast<int64_t>(ref.prompts[i].size()));
        EXPECT_GT(f.ttft_seconds, 0.0);
        EXPECT_EQ(sinks[i]->num_finals(), 1);
    }
    ASSERT_TRUE(engine->wait_idle(std::chrono::seconds(5)));
    const EngineLoad l = engine->load();
    EXPECT_EQ(l.kv_blocks_free, l.kv_blocks_total);
    EXPECT_EQ(l.pending, 0);
}

TEST_F(EngineTest, PreemptionUnderASmallCacheKeepsGreedyOutputs) {
    // 6 blocks of 4 tokens hold 24 tokens: each prompt of 9..30 tokens + 16 new ones needs 7..12
    // blocks, so running all three at once must preempt.
    EngineOptions opt{.kv_cache_bytes = 0, .kv_block_size = 4};
    const ModelConfig probe = [&] {
        auto m = MoeTransformer::load(fixture_dir("qwen3_moe"), *backend_, {});
        return (*m)->config();
    }();
    opt.kv_cache_bytes = 12 * KvCache::bytes_per_block(probe, 4, DType::kF32);
    auto engine = fixture_engine("qwen3_moe", opt);
    const Reference ref = load_reference("qwen3_moe");
    std::vector<std::shared_ptr<CollectSink>> sinks;
    for (int round = 0; round < 2; ++round)
        for (size_t i = 0; i < ref.prompts.size(); ++i) {
            sinks.push_back(std::make_shared<CollectSink>());
            auto id = engine->submit(greedy_params(ref.prompts[i], 16), sinks.back());
            ASSERT_TRUE(id.ok()) << id.status().to_string();
        }
    for (size_t k = 0; k < sinks.size(); ++k) {
        ASSERT_TRUE(sinks[k]->wait());
        EXPECT_EQ(sinks[k]->tokens(), ref.greedy[k % ref.prompts.size()]) << "request " << k;
    }
    EXPECT_GT(engine->load().num_preemptions, 0);
    ASSERT_TRUE(engine->wait_idle(std::chrono::seconds(5)));
    EXPECT_EQ(engine->load().kv_blocks_free, engine->load().kv_blocks_total);
}

TEST(KvCacheDtype, AutoFollowsTheServedMatricesAndBadNamesSaySo) {
    EXPECT_EQ(kv_cache_dtype_from_name("auto", DType::kBF16).value(), DType::kBF16);
    EXPECT_EQ(kv_cache_dtype_from_name("auto", DType::kF32).value(), DType::kF32);
    EXPECT_EQ(kv_cache_dtype_from_name("f32", DType::kBF16).value(), DType::kF32);
    EXPECT_EQ(kv_cache_dtype_from_name("bf16", DType::kF32).value(), DType::kBF16);
    auto bad = kv_cache_dtype_from_name("f16", DType::kBF16);
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.status().message().find("--kv-cache-dtype"), std::string::npos) << bad.status().to_string();
    EXPECT_NE(bad.status().message().find("f16"), std::string::npos) << bad.status().to_string();
}

// A bf16 cache holds twice the blocks in the same bytes, and the engine serves from it.
TEST_F(EngineTest, Bf16KvCacheHoldsTwiceTheBlocksAndServes) {
    const ModelConfig probe = [&] {
        auto m = MoeTransformer::load(fixture_dir("qwen3_moe"), *backend_, {});
        return (*m)->config();
    }();
    const int64_t bytes = 100 * KvCache::bytes_per_block(probe, 16, DType::kF32);
    auto f32 = fixture_engine("qwen3_moe", {.kv_cache_bytes = bytes, .kv_dtype = DType::kF32});
    auto bf16 = fixture_engine("qwen3_moe", {.kv_cache_bytes = bytes, .kv_dtype = DType::kBF16});
    EXPECT_EQ(f32->load().kv_blocks_total, 100);
    EXPECT_EQ(bf16->load().kv_blocks_total, 200);
    const Reference ref = load_reference("qwen3_moe");
    std::vector<std::shared_ptr<CollectSink>> sinks;
    for (size_t i = 0; i < ref.prompts.size(); ++i) {
        sinks.push_back(std::make_shared<CollectSink>());
        ASSERT_TRUE(bf16->submit(greedy_params(ref.prompts[i], 16), sinks.back()).ok());
    }
    // K and V rounded to bf16 may flip a near-tied greedy choice, so the tokens are not compared
    // with transformers' here (the reference test bounds the logits); the requests must finish.
    for (auto& s : sinks) {
        ASSERT_TRUE(s->wait());
        EXPECT_EQ(s->tokens().size(), 16u);
        EXPECT_EQ(s->final_event().reason, FinishReason::kLength);
    }
    ASSERT_TRUE(bf16->wait_idle(std::chrono::seconds(5)));
    EXPECT_EQ(bf16->load().kv_blocks_free, bf16->load().kv_blocks_total);
}

TEST_F(EngineTest, CancelFreesEveryBlock) {
    auto engine = fixture_engine("qwen3_moe", {.kv_cache_bytes = 4 << 20});
    const Reference ref = load_reference("qwen3_moe");
    auto sink = std::make_shared<CollectSink>();
    GenerateParams p = greedy_params(ref.prompts[2], 200);
    p.request_id = "to-cancel";
    ASSERT_TRUE(engine->submit(p, sink).ok());
    EXPECT_FALSE(engine->cancel("no-such-request"));
    EXPECT_TRUE(engine->cancel("to-cancel"));
    ASSERT_TRUE(sink->wait());
    EXPECT_EQ(sink->final_event().reason, FinishReason::kCancelled);
    ASSERT_TRUE(engine->wait_idle(std::chrono::seconds(5)));
    EXPECT_EQ(engine->load().kv_blocks_free, engine->load().kv_blocks_total);
    // The id may be used again once the first request ended.
    auto again = std::make_shared<CollectSink>();
    ASSERT_TRUE(engine->submit(greedy_params(ref.prompts[0], 2), again).ok());
    ASSERT_TRUE(again->wait());
}

TEST_F(EngineTest, ExpiredDeadlineEndsTheRequest) {
    auto engine = fixture_engine("qwen3_moe", {.kv_cache_bytes = 4 << 20});
    auto sink = std::make_shared<CollectSink>();
    GenerateParams p = greedy_params({1, 2, 3}, 200);
    p.deadline = std::chrono::steady_clock::now();
    ASSERT_TRUE(engine->submit(p, sink).ok());
    ASSERT_TRUE(sink->wait());
    // (#17 item 5) a passed deadline is its own finish reason, no longer "cancelled".
    EXPECT_EQ(sink->final_event().reason, FinishReason::kDeadline);
    EXPECT_EQ(sink->final_event().error.code(), StatusCode::kDeadlineExceeded);
    ASSERT_TRUE(engine->wait_idle(std::chrono::seconds(5)));
    EXPECT_EQ(engine->load().kv_blocks_free, engine->load().kv_blocks_total);
}

TEST_F(EngineTest, BadRequestsAreRejectedWithTheFieldAndTheLimit) {
    auto engine = fixture_engine("qwen3_moe", {.kv_cache_bytes = 4 << 20});
    auto sink = std::make_shared<CollectSink>();
    auto expect_invalid = [&](GenerateParams p, const std::string& needle) {
        auto r = engine->submit(std::move(p), sink);
        ASSERT_FALSE(r.ok()) << needle;
        EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().to_string();
        EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status().to_string();
    };
    expect_invalid(greedy_params({}, 4), "prompt");
    expect_invalid(greedy_params({1, 384}, 4), "384");
    expect_invalid(greedy_params({1, 2}, 0), "max_tokens");
    expect_invalid(greedy_params({1, 2}, 255), "context length 256");
    expect_invalid(greedy_params(std::vector<int32_t>(256, 1), 1), "context length");
    GenerateParams p = greedy_params({1, 2}, 4);
    p.sampling.temperature = -1;
    expect_invalid(p, "temperature");
    p = greedy_params({1, 2}, 4);
    p.sampling.top_p = 0;
    expect_invalid(p, "top_p");
    EXPECT_EQ(sink->num_finals(), 0);  // rejected requests never reach the sink
    // ... and the engine still serves.
    auto ok_sink = std::make_shared<CollectSink>();
    ASSERT_TRUE(engine->submit(greedy_params({1, 2, 3}, 3), ok_sink).ok());
    ASSERT_TRUE(ok_sink->wait());
    EXPECT_EQ(ok_sink->tokens().size(), 3u);
}

TEST_F(EngineTest, DrainRefusesNewWorkAndFinishesOld) {
    auto engine = fixture_engine("qwen3_moe", {.kv_cache_bytes = 4 << 20});
    auto sink = std::make_shared<CollectSink>();
    ASSERT_TRUE(engine->submit(greedy_params({5, 6, 7}, 8), sink).ok());
    engine->drain();
    auto r = engine->submit(greedy_params({1}, 2), std::make_shared<CollectSink>());
    EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
    ASSERT_TRUE(sink->wait());
    EXPECT_EQ(sink->tokens().size(), 8u);
    EXPECT_TRUE(engine->load().draining);
}

TEST_F(EngineTest, DemoModelStreamsTextAndStopsOnAStopString) {
    auto demo = make_demo_model(*backend_);
    ASSERT_TRUE(demo.ok()) << demo.status().to_string();
    auto prompt = demo->tokenizer->encode("Hello, demo!");
    ASSERT_TRUE(prompt.ok());
    auto engine_or = Engine::create(std::move(demo->model), std::move(demo->tokenizer), {.kv_cache_bytes = 8 << 20});
    ASSERT_TRUE(engine_or.ok()) << engine_or.status().to_string();
    auto engine = std::move(engine_or).value();
    ASSERT_TRUE(engine->start().ok());
    // First learn what greedy produces, then stop on a piece of it.
    auto sink = std::make_shared<CollectSink>();
    ASSERT_TRUE(engine->submit(greedy_params(*prompt, 24), sink).ok());
    ASSERT_TRUE(sink->wait());
    const std::string full = sink->text();
    auto decoded = engine->tokenizer()->decode(sink->tokens());
    ASSERT_TRUE(decoded.ok());
    EXPECT_EQ(full, *decoded);  // streamed deltas concatenate to the full decode
    ASSERT_GE(full.size(), 6u);
    const std::string stop = full.substr(3, 2);
    auto stopped = std::make_shared<CollectSink>();
    GenerateParams p = greedy_params(*prompt, 24);
    p.stopping.stop_strings = {stop};
    ASSERT_TRUE(engine->submit(p, stopped).ok());
    ASSERT_TRUE(stopped->wait());
    const FinalEvent f = stopped->final_event();
    EXPECT_EQ(f.reason, FinishReason::kStop);
    EXPECT_EQ(f.matched_stop, stop);
    EXPECT_EQ(stopped->text(), full.substr(0, full.find(stop)));
}

TEST_F(EngineTest, SameSeedSameTokensWhateverTheBatch) {
    auto engine = fixture_engine("qwen3_moe", {.kv_cache_bytes = 4 << 20});
    auto sampled = [](std::vector<int32_t> prompt, uint64_t seed) {
        GenerateParams p = greedy_params(std::move(prompt), 12);
        p.sampling.temperature = 1.0f;
        p.sampling.seed = seed;
        return p;
    };
    auto alone = std::make_shared<CollectSink>();
    ASSERT_TRUE(engine->submit(sampled({1, 2, 3, 4}, 7), alone).ok());
    ASSERT_TRUE(alone->wait());
    std::vector<std::shared_ptr<CollectSink>> crowd;
    for (int i = 0; i < 4; ++i) {
        crowd.push_back(std::make_shared<CollectSink>());
        ASSERT_TRUE(
            engine->submit(i == 2 ? sampled({1, 2, 3, 4}, 7) : sampled({9, 8, 7, 6, 5, 4}, 100 + i), crowd.back())
                .ok());
    }
    for (auto& s : crowd) ASSERT_TRUE(s->wait());
    EXPECT_EQ(crowd[2]->tokens(), alone->tokens());
}

}  // namespace
}  // namespace moe
