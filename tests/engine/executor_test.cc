// The Executor on the CPU backend with a real model (the qwen3_moe fixture): greedy tokens equal
// transformers', a sequence's tokens do not depend on its batch, an empty step is legal, the
// handoff outcome, and failures stay per sequence.
#include "engine/executor.h"

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "moe/cpu_backend.h"

namespace moe {
namespace {

std::string fixture_dir(const std::string& name) {
    return std::string(MOE_SOURCE_DIR) + "/tests/reference/fixtures/" + name;
}

struct Reference {
    std::vector<std::vector<int32_t>> prompts, greedy;
};

Reference load_reference(const std::string& name) {
    std::ifstream in(fixture_dir(name) + "/reference.json");
    EXPECT_TRUE(in.good()) << "missing " << fixture_dir(name) << "/reference.json";
    auto j = nlohmann::json::parse(in);
    return {j["prompts"].get<std::vector<std::vector<int32_t>>>(),
            j["greedy"].get<std::vector<std::vector<int32_t>>>()};
}

SamplingParams greedy() {
    SamplingParams p;
    p.temperature = 0.0f;
    return p;
}

SamplingParams seeded(uint64_t seed) {
    SamplingParams p;
    p.temperature = 1.0f;
    p.seed = seed;
    return p;
}

// A model, its KV cache, a block manager and scheduler over it, and the Executor: what the
// engine builds, without the engine.
class ExecutorTest : public ::testing::Test {
protected:
    void SetUp() override {
        backend_ = make_cpu_backend({.num_threads = 2});
        auto model = MoeTransformer::load(fixture_dir("qwen3_moe"), *backend_, {});
        ASSERT_TRUE(model.ok()) << model.status().to_string();
        model_ = std::move(model).value();
        make(SchedulerOptions{});
    }

    void make(SchedulerOptions so, int64_t num_blocks = 64) {
        executor_.reset();
        scheduler_.reset();
        kv_.reset();
        cache_.reset();
        auto cache = KvCache::create(*backend_, model_->config(), {.num_blocks = num_blocks, .block_size = 4});
        ASSERT_TRUE(cache.ok()) << cache.status().to_string();
        cache_.emplace(std::move(cache).value());
        kv_ = std::make_unique<KvBlockManager>(
            KvBlockManagerOptions{.num_blocks = num_blocks, .block_size = 4, .prefix_caching = true});
        so.max_model_len = 256;
        scheduler_ = std::make_unique<Scheduler>(so, *kv_);
        executor_ = std::make_unique<Executor>(*model_, *cache_, *scheduler_);
    }

    // Steps until every sequence added has `max_tokens` tokens (finishing each there); returns
    // each sequence's tokens and counts the outcomes seen.
    std::map<SeqId, std::vector<int32_t>> run_to_end(int64_t max_tokens) {
        std::map<SeqId, std::vector<int32_t>> out;
        for (int guard = 0; scheduler_->has_work() && guard < 10000; ++guard) {
            StepResult r = executor_->step();
            EXPECT_FALSE(r.empty());
            EXPECT_TRUE(r.ran_forward);
            for (const SeqResult& s : r.seqs) {
                ++outcomes_[s.outcome];
                EXPECT_NE(s.outcome, SeqOutcome::kFailed) << s.status.to_string();
                if (s.outcome != SeqOutcome::kSampled) continue;
                out[s.id].push_back(s.sample.token);
                // The scheduler got the same token.
                EXPECT_EQ(scheduler_->get(s.id)->tokens.back(), s.sample.token);
                if (static_cast<int64_t>(out[s.id].size()) == max_tokens) EXPECT_TRUE(executor_->finish(s.id));
            }
        }
        return out;
    }

    std::unique_ptr<Backend> backend_;
    std::unique_ptr<MoeTransformer> model_;
    std::optional<KvCache> cache_;
    std::unique_ptr<KvBlockManager> kv_;
    std::unique_ptr<Scheduler> scheduler_;
    std::unique_ptr<Executor> executor_;
    std::map<SeqOutcome, int> outcomes_;
};

TEST_F(ExecutorTest, GreedyTokensEqualTransformersInOneBatch) {
    const Reference ref = load_reference("qwen3_moe");
    for (size_t i = 0; i < ref.prompts.size(); ++i)
        ASSERT_TRUE(executor_->add({.id = i + 1, .prompt = ref.prompts[i], .max_tokens = 16}, greedy()).ok());
    auto tokens = run_to_end(16);
    for (size_t i = 0; i < ref.prompts.size(); ++i) EXPECT_EQ(tokens[i + 1], ref.greedy[i]) << "prompt " << i;
    EXPECT_EQ(kv_->num_free_blocks(), kv_->num_total_blocks());
}

// Prefill in chunks of 4 tokens: the chunks short of the prompt's end report kPrefilling and
// sample nothing; the tokens are still transformers'.
TEST_F(ExecutorTest, ChunkedPrefillReportsPrefillingAndKeepsTheTokens) {
    make({.long_prefill_chunk = 4});
    const Reference ref = load_reference("qwen3_moe");
    for (size_t i = 0; i < ref.prompts.size(); ++i)
        ASSERT_TRUE(executor_->add({.id = i + 1, .prompt = ref.prompts[i], .max_tokens = 16}, greedy()).ok());
    auto tokens = run_to_end(16);
    for (size_t i = 0; i < ref.prompts.size(); ++i) EXPECT_EQ(tokens[i + 1], ref.greedy[i]) << "prompt " << i;
    EXPECT_GT(outcomes_[SeqOutcome::kPrefilling], 0);
}

// A sampled (temperature 1, seeded) sequence gets the same tokens alone and among others.
TEST_F(ExecutorTest, SameTokensAloneAndInABatch) {
    const std::vector<int32_t> prompt = {1, 2, 3, 4, 5};
    ASSERT_TRUE(executor_->add({.id = 7, .prompt = prompt, .max_tokens = 12}, seeded(42)).ok());
    const std::vector<int32_t> alone = run_to_end(12)[7];
    ASSERT_EQ(alone.size(), 12u);
    for (SeqId id = 1; id <= 4; ++id)
        ASSERT_TRUE(
            executor_
                ->add({.id = id, .prompt = {9, 8, static_cast<int32_t>(id), 6}, .max_tokens = 12}, seeded(100 + id))
                .ok());
    ASSERT_TRUE(executor_->add({.id = 7, .prompt = prompt, .max_tokens = 12}, seeded(42)).ok());
    auto crowd = run_to_end(12);
    EXPECT_EQ(crowd[7], alone);
    EXPECT_EQ(crowd.size(), 5u);
}

// Nothing to run is a legal step: no results, no forward, no error; and the same for an empty
// explicit batch.
TEST_F(ExecutorTest, EmptyStepIsLegal) {
    StepResult r = executor_->step();
    EXPECT_TRUE(r.empty());
    EXPECT_FALSE(r.ran_forward);
    EXPECT_TRUE(r.preempted.empty());
    EXPECT_EQ(r.num_tokens, 0);
    EXPECT_TRUE(executor_->run({}).empty());
    // ... and the executor still works afterwards.
    ASSERT_TRUE(executor_->add({.id = 1, .prompt = {1, 2, 3}, .max_tokens = 2}, greedy()).ok());
    EXPECT_EQ(run_to_end(2)[1].size(), 2u);
    EXPECT_TRUE(executor_->step().empty());
}

// Without a scheduler an Executor only runs explicit batches: add() says so, step() is empty.
TEST_F(ExecutorTest, WithoutASchedulerOnlyRunWorks) {
    Executor bare(*model_, *cache_);
    auto added = bare.add({.id = 1, .prompt = {1, 2, 3}, .max_tokens = 2}, greedy());
    EXPECT_EQ(added.code(), StatusCode::kFailedPrecondition) << added.to_string();
    EXPECT_TRUE(bare.step().empty());
    EXPECT_FALSE(bare.finish(1));
    EXPECT_EQ(bare.scheduler(), nullptr);
    const std::vector<int32_t> prompt = {1, 2, 3};
    const std::vector<int32_t> table = {0};
    SequenceSampler sampler(greedy(), prompt);
    const ExecSeq seq{.id = 3, .token_ids = prompt, .num_cached = 0, .block_table = table, .sampler = &sampler};
    std::vector<SeqResult> r = bare.run(std::span<const ExecSeq>(&seq, 1));
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].outcome, SeqOutcome::kSampled) << r[0].status.to_string();
}

// Disaggregation: a sequence added with handoff_after_prefill ends its prefill step with
// kHandedOff and the token a plain sequence samples; it is not decoded here.
TEST_F(ExecutorTest, HandoffAfterPrefillEndsWithHandedOff) {
    const Reference ref = load_reference("qwen3_moe");
    ASSERT_TRUE(
        executor_->add({.id = 1, .prompt = ref.prompts[0], .max_tokens = 16}, greedy(), {.handoff_after_prefill = true})
            .ok());
    ASSERT_TRUE(executor_->add({.id = 2, .prompt = ref.prompts[1], .max_tokens = 16}, greedy()).ok());
    StepResult r = executor_->step();
    ASSERT_EQ(r.seqs.size(), 2u);
    EXPECT_EQ(r.seqs[0].id, 1u);
    EXPECT_EQ(r.seqs[0].outcome, SeqOutcome::kHandedOff);
    EXPECT_EQ(r.seqs[0].sample.token, ref.greedy[0][0]);
    EXPECT_EQ(r.seqs[1].outcome, SeqOutcome::kSampled);
    EXPECT_EQ(r.seqs[1].sample.token, ref.greedy[1][0]);
    // Its state is there for the transfer: the prompt's KV and the first token.
    const SequenceState* st = scheduler_->get(1);
    ASSERT_NE(st, nullptr);
    EXPECT_EQ(st->num_computed, static_cast<int64_t>(ref.prompts[0].size()));
    EXPECT_EQ(st->tokens.back(), ref.greedy[0][0]);
    EXPECT_FALSE(kv_->block_table(1).empty());

    // Held in the handoff phase: not planned again, blocks kept, never a victim; the other one
    // goes on.
    EXPECT_EQ(scheduler_->get(1)->phase, SeqPhase::kHandoff);
    EXPECT_EQ(scheduler_->num_running(), 1u);
    EXPECT_EQ(scheduler_->num_handoff(), 1u);
    const int64_t held_blocks = static_cast<int64_t>(kv_->block_table(1).size());
    r = executor_->step();
    ASSERT_EQ(r.seqs.size(), 1u);
    EXPECT_EQ(r.seqs[0].id, 2u);
    EXPECT_EQ(r.seqs[0].outcome, SeqOutcome::kSampled);
    EXPECT_EQ(r.seqs[0].sample.token, ref.greedy[1][1]);
    EXPECT_EQ(scheduler_->get(1)->num_computed, static_cast<int64_t>(ref.prompts[0].size()));  // not advanced
    EXPECT_EQ(static_cast<int64_t>(kv_->block_table(1).size()), held_blocks);

    // Released: only the other one runs.
    EXPECT_TRUE(executor_->finish(1));
    EXPECT_EQ(scheduler_->num_handoff(), 0u);
    EXPECT_TRUE(kv_->block_table(1).empty());
    r = executor_->step();
    ASSERT_EQ(r.seqs.size(), 1u);
    EXPECT_EQ(r.seqs[0].id, 2u);
    EXPECT_EQ(r.seqs[0].sample.token, ref.greedy[1][2]);
    EXPECT_EQ(seq_outcome_name(SeqOutcome::kHandedOff), std::string("handed_off"));
}

// A failed forward fails every sequence of the step with INTERNAL and advances nothing: the
// next step recomputes the same chunk and the tokens are still transformers'.
TEST_F(ExecutorTest, ForwardFailureFailsTheBatchAndAdvancesNothing) {
    const Reference ref = load_reference("qwen3_moe");
    int fail_forwards = 1;
    executor_->set_faults_for_testing({.before_forward = [&]() -> Status {
        if (fail_forwards > 0 && fail_forwards-- > 0) return internal_error("injected forward failure");
        return ok_status();
    }});
    for (size_t i = 0; i < 2; ++i)
        ASSERT_TRUE(executor_->add({.id = i + 1, .prompt = ref.prompts[i], .max_tokens = 16}, greedy()).ok());
    StepResult r = executor_->step();
    ASSERT_EQ(r.seqs.size(), 2u);
    for (const SeqResult& s : r.seqs) {
        EXPECT_EQ(s.outcome, SeqOutcome::kFailed);
        EXPECT_EQ(s.status.code(), StatusCode::kInternal);
        EXPECT_NE(s.status.message().find("injected forward failure"), std::string::npos) << s.status.to_string();
        EXPECT_EQ(scheduler_->get(s.id)->num_computed, 0);
        EXPECT_EQ(scheduler_->get(s.id)->num_output(), 0);
    }
    auto tokens = run_to_end(16);
    for (size_t i = 0; i < 2; ++i) EXPECT_EQ(tokens[i + 1], ref.greedy[i]) << "prompt " << i;
}

// A failed sampling fails that sequence only; the rest of the batch gets its tokens.
TEST_F(ExecutorTest, SamplingFailureFailsOnlyThatSequence) {
    const Reference ref = load_reference("qwen3_moe");
    executor_->set_faults_for_testing({.before_sample = [](SeqId id, const SequenceSampler&) -> Status {
        return id == 2 ? internal_error("injected sampling failure") : ok_status();
    }});
    for (size_t i = 0; i < 3; ++i)
        ASSERT_TRUE(executor_->add({.id = i + 1, .prompt = ref.prompts[i], .max_tokens = 16}, greedy()).ok());
    StepResult r = executor_->step();
    ASSERT_EQ(r.seqs.size(), 3u);
    EXPECT_EQ(r.seqs[1].outcome, SeqOutcome::kFailed);
    EXPECT_NE(r.seqs[1].status.message().find("injected sampling failure"), std::string::npos);
    EXPECT_EQ(scheduler_->get(2)->num_computed, 0);
    EXPECT_TRUE(executor_->finish(2));
    EXPECT_EQ(r.seqs[0].outcome, SeqOutcome::kSampled);
    EXPECT_EQ(r.seqs[2].outcome, SeqOutcome::kSampled);
    std::map<SeqId, std::vector<int32_t>> tokens = run_to_end(15);
    EXPECT_EQ(r.seqs[0].sample.token, ref.greedy[0][0]);
    EXPECT_EQ(r.seqs[2].sample.token, ref.greedy[2][0]);
    tokens[1].insert(tokens[1].begin(), r.seqs[0].sample.token);
    tokens[3].insert(tokens[3].begin(), r.seqs[2].sample.token);
    EXPECT_EQ(tokens[1], ref.greedy[0]);
    EXPECT_EQ(tokens[3], ref.greedy[2]);
    EXPECT_EQ(kv_->num_free_blocks(), kv_->num_total_blocks());
}

// run(): an explicit batch with caller-chosen blocks, as the benchmarks use it. Greedy feedback
// from the prompt gives transformers' tokens; a sequence without a sampler samples nothing.
TEST_F(ExecutorTest, ExplicitBatchRunsWithCallerBlocks) {
    const Reference ref = load_reference("qwen3_moe");
    const std::vector<int32_t>& prompt = ref.prompts[0];
    std::vector<int32_t> table(32);
    for (size_t b = 0; b < table.size(); ++b) table[b] = static_cast<int32_t>(b);
    SequenceSampler sampler(greedy(), prompt);
    std::vector<int32_t> out;
    std::vector<int32_t> feed = prompt;
    int64_t cached = 0;
    StepTimes times;
    while (out.size() < 16) {
        const ExecSeq seqs[] = {
            {.id = 5, .token_ids = feed, .num_cached = cached, .block_table = table, .sampler = &sampler},
            {.id = 6, .token_ids = prompt, .num_cached = 0, .block_table = {}, .sampler = nullptr}};
        // The second sequence has no blocks: only the first one is run here.
        std::vector<SeqResult> r = executor_->run(std::span<const ExecSeq>(seqs, 1), &times);
        ASSERT_EQ(r.size(), 1u);
        ASSERT_EQ(r[0].outcome, SeqOutcome::kSampled) << r[0].status.to_string();
        EXPECT_EQ(r[0].id, 5u);
        cached += static_cast<int64_t>(feed.size());
        out.push_back(r[0].sample.token);
        feed.assign(1, r[0].sample.token);
    }
    EXPECT_EQ(out, ref.greedy[0]);
    EXPECT_GT(times.forward_s, 0.0);
    // A bad batch (no block table) fails every sequence of it with INTERNAL, naming the cause.
    const ExecSeq bad[] = {{.id = 9, .token_ids = prompt, .num_cached = 0, .block_table = {}, .sampler = &sampler}};
    std::vector<SeqResult> r = executor_->run(bad);
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].outcome, SeqOutcome::kFailed);
    EXPECT_EQ(r[0].status.code(), StatusCode::kInternal);
    EXPECT_NE(r[0].status.message().find("block"), std::string::npos) << r[0].status.to_string();
}

}  // namespace
}  // namespace moe
