// Expert parallelism through the Engine: the engines of an in-process group step in lockstep
// (an idle rank steps with an empty batch), give the tokens of one plain engine, and end every
// request with UNAVAILABLE, never hang, when the group fails.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "engine/engine.h"
#include "engine/engine_test_util.h"
#include "ep/thread_comm.h"
#include "model/random_model.h"
#include "moe/cpu_backend.h"

namespace moe::testing {
namespace {

struct Rank {
    std::unique_ptr<Backend> be;
    std::unique_ptr<Engine> engine;
};

ModelConfig test_config() {
    RandomModelShape shape;
    shape.num_experts = 7;
    shape.vocab_size = 300;
    return parse_model_config(random_model_config_json(shape), "test model").value();
}

// One engine per rank (world 0: a plain engine without a group), models loaded in parallel
// (each rank's load is independent; no collective before the first step).
std::vector<Rank> make_ranks(int world, std::vector<std::unique_ptr<comm::Communicator>>& comms) {
    const ModelConfig c = test_config();
    std::vector<Rank> ranks(static_cast<size_t>(std::max(world, 1)));
    for (size_t r = 0; r < ranks.size(); ++r) {
        Rank& k = ranks[r];
        k.be = make_cpu_backend({.num_threads = 1, .matmul = CpuMatmul::kOwn});
        ModelLoadOptions o;
        o.weight_dtype = WeightDType::kBF16;
        if (world > 0) o.expert_parallel.comm = comms[r].get();
        auto model = MoeTransformer::create(c, make_random_weights(c, 11, DType::kBF16), *k.be, o);
        EXPECT_TRUE(model.ok()) << model.status().to_string();
        EngineOptions eo;
        eo.kv_cache_bytes = 8 << 20;
        eo.kv_block_size = 8;
        auto e = Engine::create(std::move(model).value(), nullptr, eo);
        EXPECT_TRUE(e.ok()) << e.status().to_string();
        k.engine = std::move(e).value();
    }
    return ranks;
}

GenerateParams greedy(std::vector<int32_t> prompt, int max_tokens) {
    GenerateParams p;
    p.prompt_ids = std::move(prompt);
    p.sampling.temperature = 0;
    p.stopping.max_tokens = max_tokens;
    p.stopping.ignore_eos = true;
    return p;
}

std::vector<std::vector<int32_t>> prompts() {
    std::vector<std::vector<int32_t>> p;
    for (int i = 0; i < 5; ++i) {
        std::vector<int32_t> ids;
        for (int j = 0; j < 2 + 7 * i; ++j) ids.push_back(static_cast<int32_t>((13 * i + 31 * j + 5) % 300));
        p.push_back(ids);
    }
    return p;
}

// Runs every prompt, prompt i on rank owner[i]; returns the tokens per prompt.
std::vector<std::vector<int32_t>> run_all(std::vector<Rank>& ranks, const std::vector<int>& owner) {
    const auto ps = prompts();
    for (auto& r : ranks) EXPECT_TRUE(r.engine->start().ok());
    std::vector<std::shared_ptr<CollectSink>> sinks;
    for (size_t i = 0; i < ps.size(); ++i) {
        sinks.push_back(std::make_shared<CollectSink>());
        auto id =
            ranks[static_cast<size_t>(owner[i])].engine->submit(greedy(ps[i], 6 + static_cast<int>(i)), sinks.back());
        EXPECT_TRUE(id.ok()) << id.status().to_string();
    }
    std::vector<std::vector<int32_t>> out;
    for (size_t i = 0; i < ps.size(); ++i) {
        EXPECT_TRUE(sinks[i]->wait(std::chrono::seconds(60))) << "prompt " << i << " never finished";
        EXPECT_EQ(sinks[i]->final_event().reason, FinishReason::kLength) << sinks[i]->final_event().error.to_string();
        out.push_back(sinks[i]->tokens());
    }
    for (auto& r : ranks) EXPECT_TRUE(r.engine->healthy());
    // NOTE: the ranks stop together (the first stop the lockstep sees ends every rank's loop; a
    // rank that had not been asked to stop yet reports its engine failed): stop them at once.
    std::vector<std::thread> stoppers;
    for (auto& r : ranks) stoppers.emplace_back([&r] { r.engine->stop(); });
    for (auto& t : stoppers) t.join();
    return out;
}

TEST(EpEngine, GroupsOf2And3GiveThePlainEnginesTokens) {
    std::vector<std::unique_ptr<comm::Communicator>> none;
    auto plain_ranks = make_ranks(0, none);
    const auto plain = run_all(plain_ranks, std::vector<int>(prompts().size(), 0));
    for (int world = 2; world <= 3; ++world) {
        auto comms = make_thread_comms(world);
        auto ranks = make_ranks(world, comms);
        // Even prompts on rank 0, odd ones on the last rank: with three ranks, rank 1 has none.
        std::vector<int> owner;
        for (size_t i = 0; i < prompts().size(); ++i) owner.push_back(i % 2 == 0 ? 0 : world - 1);
        EXPECT_EQ(run_all(ranks, owner), plain) << "world " << world;
        // The idle rank stepped with the others.
        if (world == 3) EXPECT_EQ(ranks[1].engine->load().generated_tokens, 0);
    }
}

TEST(EpEngine, APeerThatNeverStepsEndsEveryRequestWithUnavailable) {
    auto comms = make_thread_comms(2, std::chrono::milliseconds(500));
    auto ranks = make_ranks(2, comms);
    ASSERT_TRUE(ranks[0].engine->start().ok());  // rank 1's engine is never started
    auto sink = std::make_shared<CollectSink>();
    ASSERT_TRUE(ranks[0].engine->submit(greedy(prompts()[1], 4), sink).ok());
    ASSERT_TRUE(sink->wait(std::chrono::seconds(20))) << "the request hung";
    EXPECT_EQ(sink->final_event().reason, FinishReason::kError);
    EXPECT_EQ(sink->final_event().error.code(), StatusCode::kUnavailable) << sink->final_event().error.to_string();
    EXPECT_NE(sink->final_event().error.message().find("expert-parallel group"), std::string::npos)
        << sink->final_event().error.to_string();
    EXPECT_FALSE(ranks[0].engine->healthy());
    // A request after the failure gets its final at once, with the same code.
    auto late = std::make_shared<CollectSink>();
    auto id = ranks[0].engine->submit(greedy(prompts()[0], 2), late);
    if (id.ok()) {
        ASSERT_TRUE(late->wait(std::chrono::seconds(5)));
        EXPECT_EQ(late->final_event().error.code(), StatusCode::kUnavailable);
    }
    ranks[0].engine->stop();
}

}  // namespace
}  // namespace moe::testing
