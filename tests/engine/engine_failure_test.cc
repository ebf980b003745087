// No per-request condition takes the engine down (issue 18 A, issue 17 item 5): a step that
// fails ends the affected requests with INTERNAL and the others go on; an exception escaping the
// step loop ends every request in flight with INTERNAL, marks the engine failed, and the process
// goes on. Failures are injected through Engine::set_executor_faults_for_testing.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "engine/engine.h"
#include "engine/engine_test_util.h"
#include "moe/cpu_backend.h"

namespace moe {
namespace {

using namespace moe::testing;

GenerateParams greedy_params(std::vector<int32_t> prompt, int64_t max_tokens, std::optional<uint64_t> seed = {}) {
    GenerateParams p;
    p.prompt_ids = std::move(prompt);
    p.sampling.temperature = 0.0f;
    p.sampling.seed = seed;
    p.stopping.max_tokens = max_tokens;
    p.stopping.ignore_eos = true;
    return p;
}

constexpr uint64_t kDoomedSeed = 666;  // the sampling fault hits sequences with this seed

class EngineFailureTest : public ::testing::Test {
protected:
    void SetUp() override { backend_ = make_cpu_backend({.num_threads = 2}); }
    // The engine, its faults set, started.
    std::unique_ptr<Engine> engine(ExecutorFaults faults) {
        auto model = MoeTransformer::load(fixture_dir("qwen3_moe"), *backend_, {});
        EXPECT_TRUE(model.ok()) << model.status().to_string();
        auto e = Engine::create(std::move(model).value(), nullptr, {.kv_cache_bytes = 4 << 20});
        EXPECT_TRUE(e.ok()) << e.status().to_string();
        (*e)->set_executor_faults_for_testing(std::move(faults));
        EXPECT_TRUE((*e)->start().ok());
        return std::move(e).value();
    }
    std::unique_ptr<Backend> backend_;
};

// Issue 18 A's probes through the whole engine: parameters that passed validation and used to
// abort the process in the sampler now give tokens, and the engine stays healthy.
TEST_F(EngineFailureTest, SamplerExtremesAreServed) {
    const Reference ref = load_reference("qwen3_moe");
    auto e = engine({});
    std::vector<std::shared_ptr<CollectSink>> sinks;
    for (int probe = 0; probe < 6; ++probe) {
        GenerateParams p = greedy_params(ref.prompts[0], 8, 1);
        p.sampling.temperature = probe < 3 ? std::vector<float>{1e-45f, 2.9e-39f, 1e-38f}[probe] : 1.0f;
        if (probe >= 3) p.sampling.repetition_penalty = 1e-45f;
        if (probe == 4) p.sampling.top_p = 1e-45f;
        if (probe == 5) p.sampling.min_p = 1.0f;
        sinks.push_back(std::make_shared<CollectSink>());
        auto id = e->submit(p, sinks.back());
        ASSERT_TRUE(id.ok()) << "probe " << probe << ": " << id.status().to_string();
    }
    for (size_t i = 0; i < sinks.size(); ++i) {
        ASSERT_TRUE(sinks[i]->wait());
        EXPECT_EQ(sinks[i]->final_event().reason, FinishReason::kLength) << "probe " << i;
        EXPECT_EQ(sinks[i]->tokens().size(), 8u) << "probe " << i;
    }
    // A temperature that small is greedy in the limit: transformers' greedy tokens (no ties here).
    const std::vector<int32_t> greedy8(ref.greedy[0].begin(), ref.greedy[0].begin() + 8);
    EXPECT_EQ(sinks[0]->tokens(), greedy8);
    EXPECT_EQ(sinks[1]->tokens(), greedy8);
    EXPECT_TRUE(e->healthy());
}

TEST_F(EngineFailureTest, SamplingFailureEndsOnlyThatRequest) {
    const Reference ref = load_reference("qwen3_moe");
    auto e = engine({.before_sample = [](SeqId, const SequenceSampler& s) -> Status {
        return s.params().seed == kDoomedSeed ? internal_error("injected sampling failure") : ok_status();
    }});
    auto doomed = std::make_shared<CollectSink>();
    std::vector<std::shared_ptr<CollectSink>> others;
    ASSERT_TRUE(e->submit(greedy_params(ref.prompts[0], 16, kDoomedSeed), doomed).ok());
    for (size_t i = 0; i < ref.prompts.size(); ++i) {
        others.push_back(std::make_shared<CollectSink>());
        ASSERT_TRUE(e->submit(greedy_params(ref.prompts[i], 16), others.back()).ok());
    }
    ASSERT_TRUE(doomed->wait());
    EXPECT_EQ(doomed->final_event().reason, FinishReason::kError);
    EXPECT_EQ(doomed->final_event().error.code(), StatusCode::kInternal);
    EXPECT_NE(doomed->final_event().error.message().find("injected sampling failure"), std::string::npos);
    for (size_t i = 0; i < others.size(); ++i) {
        ASSERT_TRUE(others[i]->wait());
        EXPECT_EQ(others[i]->final_event().reason, FinishReason::kLength);
        EXPECT_EQ(others[i]->tokens(), ref.greedy[i]) << "prompt " << i;
    }
    ASSERT_TRUE(e->wait_idle(std::chrono::seconds(5)));
    EXPECT_TRUE(e->healthy());
    EXPECT_FALSE(e->load().failed);
    EXPECT_EQ(e->load().kv_blocks_free, e->load().kv_blocks_total);
}

TEST_F(EngineFailureTest, ForwardFailureEndsThatStepsRequestsAndTheEngineGoesOn) {
    const Reference ref = load_reference("qwen3_moe");
    std::atomic<int> fail_forwards{0};
    auto e = engine({.before_forward = [&]() -> Status {
        if (fail_forwards.load() > 0) {
            fail_forwards.fetch_sub(1);
            return internal_error("injected forward failure");
        }
        return ok_status();
    }});
    fail_forwards.store(1);
    auto first = std::make_shared<CollectSink>();
    ASSERT_TRUE(e->submit(greedy_params(ref.prompts[0], 16), first).ok());
    ASSERT_TRUE(first->wait());
    EXPECT_EQ(first->final_event().reason, FinishReason::kError);
    EXPECT_EQ(first->final_event().error.code(), StatusCode::kInternal);
    EXPECT_NE(first->final_event().error.message().find("injected forward failure"), std::string::npos)
        << first->final_event().error.to_string();
    EXPECT_EQ(first->num_finals(), 1);
    // The next request is served as if nothing happened.
    auto next = std::make_shared<CollectSink>();
    ASSERT_TRUE(e->submit(greedy_params(ref.prompts[1], 16), next).ok());
    ASSERT_TRUE(next->wait());
    EXPECT_EQ(next->tokens(), ref.greedy[1]);
    ASSERT_TRUE(e->wait_idle(std::chrono::seconds(5)));
    EXPECT_TRUE(e->healthy());
    EXPECT_EQ(e->load().kv_blocks_free, e->load().kv_blocks_total);
}

TEST_F(EngineFailureTest, ExceptionInTheStepLoopFailsEveryRequestAndMarksTheEngineFailed) {
    const Reference ref = load_reference("qwen3_moe");
    std::atomic<int> forwards{0};
    // The third forward throws: by then some requests have streamed tokens.
    auto e = engine({.before_forward = [&]() -> Status {
        if (forwards.fetch_add(1) == 2) throw std::runtime_error("injected exception");
        return ok_status();
    }});
    std::vector<std::shared_ptr<CollectSink>> sinks;
    for (size_t i = 0; i < ref.prompts.size(); ++i) {
        sinks.push_back(std::make_shared<CollectSink>());
        ASSERT_TRUE(e->submit(greedy_params(ref.prompts[i], 100), sinks.back()).ok());
    }
    for (auto& s : sinks) {
        ASSERT_TRUE(s->wait());
        EXPECT_EQ(s->final_event().reason, FinishReason::kError);
        EXPECT_EQ(s->final_event().error.code(), StatusCode::kInternal);
        EXPECT_NE(s->final_event().error.message().find("injected exception"), std::string::npos)
            << s->final_event().error.to_string();
        EXPECT_LT(s->tokens().size(), 100u);
    }
    EXPECT_FALSE(e->healthy());
    EXPECT_TRUE(e->load().failed);
    // A request that arrives afterwards still gets its one final event, with INTERNAL.
    auto late = std::make_shared<CollectSink>();
    auto id = e->submit(greedy_params(ref.prompts[0], 4), late);
    if (id.ok()) {
        ASSERT_TRUE(late->wait());
        EXPECT_EQ(late->final_event().reason, FinishReason::kError);
        EXPECT_EQ(late->final_event().error.code(), StatusCode::kInternal);
    } else {
        EXPECT_EQ(id.status().code(), StatusCode::kUnavailable) << id.status().to_string();
    }
    EXPECT_TRUE(e->wait_idle(std::chrono::seconds(5)));
    e->stop();  // and the engine stops cleanly; this process is still here to check it
    for (auto& s : sinks) EXPECT_EQ(s->num_finals(), 1);
    EXPECT_LE(late->num_finals(), 1);
}

}  // namespace
}  // namespace moe
