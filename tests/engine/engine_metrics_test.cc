// The engine's Prometheus metrics after real requests: every counter and histogram says what the
// requests' own final events say, and the exposition parses strictly.
#include <gtest/gtest.h>

#include <thread>

#include "core/metrics.h"
#include "engine/engine.h"
#include "engine/engine_test_util.h"
#include "metrics/exposition_parser.h"
#include "moe/cpu_backend.h"

namespace moe {
namespace {

using namespace moe::testing;
using metrics::testing::Exposition;
using metrics::testing::parse_exposition;

GenerateParams greedy(std::vector<int32_t> prompt, int64_t max_tokens) {
    GenerateParams p;
    p.prompt_ids = std::move(prompt);
    p.sampling.temperature = 0.0f;
    p.stopping.max_tokens = max_tokens;
    p.stopping.ignore_eos = true;
    return p;
}

// Holds the engine thread inside the request's second delta until release().
class HoldingSink : public CollectSink {
public:
    void on_delta(DeltaEvent&& d) override {
        CollectSink::on_delta(std::move(d));
        std::unique_lock<std::mutex> lock(mu_);
        if (++deltas_ != 2) return;
        held_ = true;
        cv_.notify_all();
        cv_.wait_for(lock, std::chrono::seconds(30), [&] { return released_; });
    }
    bool wait_held() {
        std::unique_lock<std::mutex> lock(mu_);
        return cv_.wait_for(lock, std::chrono::seconds(60), [&] { return held_; });
    }
    void release() {
        std::lock_guard<std::mutex> lock(mu_);
        released_ = true;
        cv_.notify_all();
    }

private:
    std::mutex mu_;
    std::condition_variable cv_;
    int deltas_ = 0;
    bool held_ = false, released_ = false;
};

class EngineMetricsTest : public ::testing::Test {
protected:
    void SetUp() override { backend_ = make_cpu_backend({.num_threads = 1}); }
    std::unique_ptr<Engine> engine(EngineOptions opt) {
        auto model = MoeTransformer::load(fixture_dir("qwen3_moe"), *backend_, {});
        EXPECT_TRUE(model.ok()) << model.status().to_string();
        auto e = Engine::create(std::move(model).value(), nullptr, opt);
        EXPECT_TRUE(e.ok()) << e.status().to_string();
        EXPECT_TRUE((*e)->start().ok());
        return std::move(e).value();
    }
    static Exposition scrape(const Engine& e) {
        auto parsed = parse_exposition(metrics::render_text(e.metrics()));
        EXPECT_TRUE(parsed.ok()) << parsed.status().to_string();
        return parsed.ok() ? std::move(parsed).value() : Exposition{};
    }
    std::unique_ptr<Backend> backend_;
};

const std::map<std::string, std::string> kModel = {{"model_name", "t-model"}};

std::map<std::string, std::string> with_reason(const char* reason) {
    auto l = kModel;
    l["finished_reason"] = reason;
    return l;
}

TEST_F(EngineMetricsTest, CountersAndHistogramsSayWhatTheRequestsDid) {
    auto shared = std::make_shared<metrics::Registry>();
    auto eng =
        engine({.kv_cache_bytes = 4 << 20, .kv_block_size = 4, .metrics = shared, .metrics_model_name = "t-model"});
    EXPECT_EQ(&eng->metrics(), shared.get());  // the server renders the registry it passed in
    const Reference ref = load_reference("qwen3_moe");

    std::vector<FinalEvent> finals;
    auto run = [&](GenerateParams p) {
        auto sink = std::make_shared<CollectSink>();
        EXPECT_TRUE(eng->submit(std::move(p), sink).ok());
        EXPECT_TRUE(sink->wait());
        finals.push_back(sink->final_event());
    };
    // Three prompts concurrently, then the longest again (its prefix is cached by then), then
    // one that stops at max_tokens = 1 (a TTFT, no inter-token gap).
    {
        std::vector<std::shared_ptr<CollectSink>> sinks;
        for (size_t i = 0; i < ref.prompts.size(); ++i) {
            sinks.push_back(std::make_shared<CollectSink>());
            ASSERT_TRUE(eng->submit(greedy(ref.prompts[i], 8), sinks.back()).ok());
        }
        for (auto& s : sinks) {
            ASSERT_TRUE(s->wait());
            finals.push_back(s->final_event());
        }
    }
    run(greedy(ref.prompts[2], 5));
    EXPECT_GT(finals.back().cached_prompt_tokens, 0) << "the repeated prompt should hit the prefix cache";
    run(greedy(ref.prompts[0], 1));
    // One cancelled while running, held inside its second delta (the engine thread waits there)
    // so that the scrape surely sees it running: the gauges were refreshed after its first step.
    {
        auto sink = std::make_shared<HoldingSink>();
        GenerateParams p = greedy(ref.prompts[1], 200);
        p.request_id = "cancel-me";
        ASSERT_TRUE(eng->submit(p, sink).ok());
        ASSERT_TRUE(sink->wait_held());
        const Exposition live = scrape(*eng);
        EXPECT_EQ(live.value("vllm:num_requests_running", kModel), 1);
        EXPECT_GT(live.value("moe:kv_blocks_used", kModel), 0);
        EXPECT_GT(live.value("vllm:kv_cache_usage_perc", kModel), 0);
        EXPECT_TRUE(eng->cancel("cancel-me"));
        sink->release();
        ASSERT_TRUE(sink->wait());
        finals.push_back(sink->final_event());
    }
    {
        auto sink = std::make_shared<CollectSink>();
        GenerateParams p = greedy({1, 2, 3}, 50);
        p.deadline = std::chrono::steady_clock::now();
        ASSERT_TRUE(eng->submit(p, sink).ok());
        ASSERT_TRUE(sink->wait());
        finals.push_back(sink->final_event());
    }
    ASSERT_TRUE(eng->wait_idle(std::chrono::seconds(5)));

    // What the final events say, summed.
    int64_t generated = 0, prompt_of_started = 0, cached = 0, with_token = 0, gaps = 0;
    double e2e = 0;
    std::map<FinishReason, int> by_reason;
    for (const auto& f : finals) {
        generated += f.completion_tokens;
        if (f.completion_tokens > 0) {
            prompt_of_started += f.prompt_tokens;
            cached += f.cached_prompt_tokens;
            ++with_token;
            gaps += f.completion_tokens - 1;
        }
        e2e += f.total_seconds;
        ++by_reason[f.reason];
    }
    EXPECT_EQ(by_reason[FinishReason::kLength], 5);
    EXPECT_EQ(by_reason[FinishReason::kCancelled], 1);
    EXPECT_EQ(by_reason[FinishReason::kDeadline], 1);

    const Exposition e = scrape(*eng);
    EXPECT_EQ(e.value("vllm:request_success_total", with_reason("length")), 5);
    EXPECT_EQ(e.value("vllm:request_success_total", with_reason("abort")), 1);
    EXPECT_EQ(e.value("vllm:request_success_total", with_reason("deadline")), 1);
    EXPECT_EQ(e.value("vllm:request_success_total", with_reason("stop")), 0);
    EXPECT_EQ(e.value("vllm:request_success_total", with_reason("error")), 0);
    EXPECT_EQ(e.value("vllm:generation_tokens_total", kModel), generated);
    EXPECT_EQ(e.value("vllm:prompt_tokens_total", kModel), prompt_of_started);
    EXPECT_EQ(e.value("vllm:prefix_cache_queries_total", kModel), prompt_of_started);
    EXPECT_EQ(e.value("vllm:prefix_cache_hits_total", kModel), cached);
    EXPECT_GT(cached, 0);
    EXPECT_EQ(e.value("vllm:time_to_first_token_seconds_count", kModel), with_token);
    EXPECT_EQ(e.value("vllm:inter_token_latency_seconds_count", kModel), gaps);
    EXPECT_EQ(e.value("vllm:e2e_request_latency_seconds_count", kModel), static_cast<double>(finals.size()));
    EXPECT_NEAR(e.value("vllm:e2e_request_latency_seconds_sum", kModel), e2e, 1e-6 * finals.size());
    // The deadline request was never scheduled: no queue time for it.
    EXPECT_EQ(e.value("vllm:request_queue_time_seconds_count", kModel), static_cast<double>(finals.size() - 1));
    EXPECT_EQ(e.value("vllm:request_generation_tokens_sum", kModel), generated);
    const EngineLoad load = eng->load();
    EXPECT_EQ(e.value("moe:engine_step_duration_seconds_count", kModel), load.steps);
    EXPECT_EQ(e.value("vllm:iteration_tokens_total_count", kModel), load.steps);
    EXPECT_GT(e.value("moe:engine_step_duration_seconds_sum", kModel), 0);
    // Idle again: nothing running or waiting, every block back.
    EXPECT_EQ(e.value("vllm:num_requests_running", kModel), 0);
    EXPECT_EQ(e.value("vllm:num_requests_waiting", kModel), 0);
    EXPECT_EQ(e.value("moe:kv_blocks_used", kModel), 0);
    EXPECT_EQ(e.value("vllm:kv_cache_usage_perc", kModel), 0);
    EXPECT_EQ(e.value("moe:kv_blocks_total", kModel), load.kv_blocks_total);
    EXPECT_EQ(e.value("moe:kv_blocks_cached", kModel), load.kv_blocks_cached);
    EXPECT_EQ(e.value("vllm:num_preemptions_total", kModel), 0);
}

TEST_F(EngineMetricsTest, PreemptionsAreCounted) {
    EngineOptions opt{.kv_block_size = 4};
    const ModelConfig probe = [&] {
        auto m = MoeTransformer::load(fixture_dir("qwen3_moe"), *backend_, {});
        return (*m)->config();
    }();
    // 12 blocks of 4 tokens for three prompts of 9..30 tokens + 16 new ones each: must preempt.
    opt.kv_cache_bytes = 12 * KvCache::bytes_per_block(probe, 4, DType::kF32);
    auto eng = engine(opt);
    const Reference ref = load_reference("qwen3_moe");
    std::vector<std::shared_ptr<CollectSink>> sinks;
    for (int round = 0; round < 2; ++round)
        for (const auto& prompt : ref.prompts) {
            sinks.push_back(std::make_shared<CollectSink>());
            ASSERT_TRUE(eng->submit(greedy(prompt, 16), sinks.back()).ok());
        }
    for (auto& s : sinks) ASSERT_TRUE(s->wait());
    const Exposition e = scrape(*eng);
    const std::map<std::string, std::string> m = {{"model_name", "moeserve"}};  // the default label
    EXPECT_GT(eng->load().num_preemptions, 0);
    EXPECT_EQ(e.value("vllm:num_preemptions_total", m), eng->load().num_preemptions);
    EXPECT_EQ(e.value("vllm:request_success_total", {{"model_name", "moeserve"}, {"finished_reason", "length"}}),
              static_cast<double>(sinks.size()));
}

}  // namespace
}  // namespace moe
