// Scheduler tests, step by step, against a mock executor.
//
// Diagrams: one row per step; "P7" = a prefill chunk of 7 tokens, "D" = one decode token,
// "-" = not scheduled, "x" = preempted.
#include "engine/scheduler.h"

#include <gtest/gtest.h>

#include <map>
#include <numeric>
#include <random>

namespace moe {
namespace {

// The mock model: the next token is a hash of the whole sequence so far, so a recomputed
// sequence produces exactly the tokens it would have produced without interruption.
int32_t mock_next(const std::vector<int32_t>& tokens) {
    uint32_t h = 2166136261u;
    for (int32_t t : tokens) h = (h ^ static_cast<uint32_t>(t)) * 16777619u;
    return static_cast<int32_t>(h % 1000);
}

struct Harness {
    explicit Harness(KvBlockManagerOptions kv_opt, SchedulerOptions opt) : kv(kv_opt), sched(opt, kv) {}

    // Runs one step; returns the plan. Sequences reaching max_tokens are finished.
    StepPlan step() {
        StepPlan plan = sched.schedule();
        std::vector<int32_t> sampled(plan.seqs.size(), -1);
        for (size_t i = 0; i < plan.seqs.size(); ++i) {
            const SequenceState* st = sched.get(plan.seqs[i].id);
            EXPECT_EQ(plan.seqs[i].start, st->num_computed);
            EXPECT_GE(static_cast<int64_t>(kv.block_table(plan.seqs[i].id).size()) * kv.block_size(),
                      plan.seqs[i].start + plan.seqs[i].num_tokens);
            if (plan.seqs[i].samples) sampled[i] = mock_next(st->tokens);
        }
        sched.on_step_done(plan, sampled);
        for (size_t i = 0; i < plan.seqs.size(); ++i) {
            const SequenceState* st = sched.get(plan.seqs[i].id);
            if (plan.seqs[i].samples && st->num_output() >= st->max_tokens) {
                outputs[st->id] = std::vector<int32_t>(st->tokens.begin() + st->num_prompt, st->tokens.end());
                cached_prompt[st->id] = st->num_cached_prompt;
                sched.finish(st->id);
            }
        }
        std::string why;
        EXPECT_TRUE(kv.check_invariants(&why)) << why;
        return plan;
    }
    void run_to_end(int max_steps = 10000) {
        for (int i = 0; i < max_steps && sched.has_work(); ++i) step();
        EXPECT_FALSE(sched.has_work());
    }
    // "P7 D -" style row for ids
    std::string row(const StepPlan& plan, const std::vector<SeqId>& ids) {
        std::string out;
        for (SeqId id : ids) {
            std::string cell = "-";
            for (const auto& s : plan.seqs)
                if (s.id == id) cell = s.num_tokens == 1 && s.start >= sched.get(id)->num_prompt ? "D" : "P" + std::to_string(s.num_tokens);
            for (SeqId p : plan.preempted)
                if (p == id) cell = "x";
            out += (out.empty() ? "" : " ") + cell;
        }
        return out;
    }

    KvBlockManager kv;
    Scheduler sched;
    std::map<SeqId, std::vector<int32_t>> outputs;
    std::map<SeqId, int64_t> cached_prompt;
};

std::vector<int32_t> prompt_of(int n, int seed) {
    std::vector<int32_t> p(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) p[static_cast<size_t>(i)] = (seed * 131 + i * 7) % 500;
    return p;
}

// Output of one request run alone in a roomy cache.
std::vector<int32_t> alone(const std::vector<int32_t>& prompt, int64_t max_tokens) {
    Harness h({.num_blocks = 256, .block_size = 4}, {.max_batched_tokens = 64});
    EXPECT_TRUE(h.sched.add({.id = 1, .prompt = prompt, .max_tokens = max_tokens}).ok());
    h.run_to_end();
    return h.outputs.at(1);
}

TEST(Scheduler, LongPromptIsChunkedUnderTheTokenBudget) {
    Harness h({.num_blocks = 64, .block_size = 4}, {.max_batched_tokens = 8});
    ASSERT_TRUE(h.sched.add({.id = 1, .prompt = prompt_of(20, 1), .max_tokens = 3}).ok());
    //          seq 1
    // step 1:  P8      positions 0..7
    // step 2:  P8      8..15
    // step 3:  P4      16..19, samples the first token
    // step 4:  D
    // step 5:  D       third token: finished
    const std::vector<std::string> want = {"P8", "P8", "P4", "D", "D"};
    for (const auto& w : want) {
        StepPlan p = h.step();
        EXPECT_EQ(h.sched.get(1) ? h.row(p, {1}) : (p.seqs.size() == 1 && p.seqs[0].num_tokens == 1 ? "D" : "?"), w);
    }
    EXPECT_FALSE(h.sched.has_work());
    EXPECT_EQ(h.outputs.at(1), alone(prompt_of(20, 1), 3));
}

TEST(Scheduler, DecodeGoesFirstAndPrefillFillsTheRestOfTheStep) {
    Harness h({.num_blocks = 64, .block_size = 4}, {.max_batched_tokens = 10});
    ASSERT_TRUE(h.sched.add({.id = 1, .prompt = prompt_of(6, 1), .max_tokens = 8}).ok());
    StepPlan p = h.step();  // step 1: P6 (seq 1 alone)
    EXPECT_EQ(h.row(p, {1}), "P6");
    ASSERT_TRUE(h.sched.add({.id = 2, .prompt = prompt_of(15, 2), .max_tokens = 8}).ok());
    //          seq1 seq2
    // step 2:  D    P9     decode first, then 9 of seq 2's 15 prompt tokens (budget 10)
    // step 3:  D    P6     the rest of seq 2's prompt
    // step 4:  D    D
    p = h.step();
    EXPECT_EQ(h.row(p, {1, 2}), "D P9");
    EXPECT_EQ(p.seqs[0].id, 1u);  // running sequences come first
    p = h.step();
    EXPECT_EQ(h.row(p, {1, 2}), "D P6");
    EXPECT_TRUE(p.seqs[1].samples);
    p = h.step();
    EXPECT_EQ(h.row(p, {1, 2}), "D D");
    h.run_to_end();
    EXPECT_EQ(h.outputs.at(2), alone(prompt_of(15, 2), 8));
}

TEST(Scheduler, MaxSeqsCapsAStep) {
    Harness h({.num_blocks = 64, .block_size = 4}, {.max_batched_tokens = 100, .max_seqs = 2});
    for (SeqId id = 1; id <= 3; ++id) ASSERT_TRUE(h.sched.add({.id = id, .prompt = prompt_of(3, static_cast<int>(id)), .max_tokens = 2}).ok());
    StepPlan p = h.step();
    EXPECT_EQ(h.row(p, {1, 2, 3}), "P3 P3 -");
    EXPECT_EQ(h.sched.num_waiting(), 1u);
    h.run_to_end();
    EXPECT_EQ(h.outputs.size(), 3u);
}

TEST(Scheduler, OutOfBlocksPreemptsTheNewestWhichLaterFinishesWithTheSameTokens) {
    // 6 blocks of 4 tokens. Two prompts of 8 tokens take 2 blocks each; decoding 8 more tokens
    // each needs 4 blocks each: they cannot both finish without preemption.
    Harness h({.num_blocks = 6, .block_size = 4}, {.max_batched_tokens = 32});
    ASSERT_TRUE(h.sched.add({.id = 1, .prompt = prompt_of(8, 1), .max_tokens = 8}).ok());
    ASSERT_TRUE(h.sched.add({.id = 2, .prompt = prompt_of(8, 2), .max_tokens = 8}).ok());
    //          seq1 seq2
    // step 1:  P8   P8     4 blocks used
    // ...      D    D      positions 8..11 need blocks 3 and 4 of each: 6 blocks used
    // step k:  D    x      seq 1 needs a 4th block: the newest (seq 2) is preempted
    // later:   seq 2 is recomputed (prompt + its tokens so far) once seq 1 is done
    bool saw_preemption = false;
    for (int i = 0; i < 200 && h.sched.has_work(); ++i) {
        StepPlan p = h.step();
        for (SeqId v : p.preempted) {
            EXPECT_EQ(v, 2u);  // never the older one
            saw_preemption = true;
            EXPECT_EQ(h.sched.get(2)->phase, SeqPhase::kWaiting);
            EXPECT_EQ(h.sched.get(2)->num_computed, 0);
        }
    }
    EXPECT_TRUE(saw_preemption);
    EXPECT_EQ(h.outputs.at(1), alone(prompt_of(8, 1), 8));
    EXPECT_EQ(h.outputs.at(2), alone(prompt_of(8, 2), 8));
    EXPECT_EQ(h.kv.num_free_blocks(), 6);
}

TEST(Scheduler, PrefixCacheHitSkipsTheCachedBlocks) {
    Harness h({.num_blocks = 64, .block_size = 16}, {.max_batched_tokens = 256});
    auto shared = prompt_of(40, 9);  // blocks [0,16) [16,32) full, [32,40) partial
    ASSERT_TRUE(h.sched.add({.id = 1, .prompt = shared, .max_tokens = 2}).ok());
    h.run_to_end();
    auto second = shared;
    second.resize(36);
    second.push_back(7);  // same first 32 tokens, different tail
    ASSERT_TRUE(h.sched.add({.id = 2, .prompt = second, .max_tokens = 2}).ok());
    StepPlan p = h.step();
    ASSERT_EQ(p.seqs.size(), 1u);
    EXPECT_EQ(p.seqs[0].start, 32);      // two cached blocks skipped
    EXPECT_EQ(p.seqs[0].num_tokens, 5);  // 37 - 32
    h.run_to_end();
    EXPECT_EQ(h.cached_prompt.at(2), 32);
    EXPECT_EQ(h.outputs.at(2), alone(second, 2));
    // A different salt does not hit.
    ASSERT_TRUE(h.sched.add({.id = 3, .prompt = second, .max_tokens = 2, .cache_salt = "other"}).ok());
    p = h.step();
    EXPECT_EQ(p.seqs[0].start, 0);
    h.run_to_end();
}

TEST(Scheduler, FinishInAnyPhaseReturnsEveryBlock) {
    Harness h({.num_blocks = 16, .block_size = 4}, {.max_batched_tokens = 6});
    ASSERT_TRUE(h.sched.add({.id = 1, .prompt = prompt_of(10, 1), .max_tokens = 20}).ok());
    ASSERT_TRUE(h.sched.add({.id = 2, .prompt = prompt_of(10, 2), .max_tokens = 20}).ok());
    h.step();  // seq 1 mid-prefill, seq 2 waiting
    EXPECT_TRUE(h.sched.finish(2));   // waiting
    EXPECT_TRUE(h.sched.finish(1));   // running, mid-prefill
    EXPECT_FALSE(h.sched.finish(1));  // unknown now
    EXPECT_FALSE(h.sched.has_work());
    EXPECT_EQ(h.kv.num_free_blocks(), 16);
}

TEST(Scheduler, RejectsWhatCanNeverRunAndAFullQueue) {
    Harness h({.num_blocks = 4, .block_size = 4}, {.max_waiting = 2, .max_model_len = 64});
    Status s = h.sched.add({.id = 1, .prompt = prompt_of(10, 1), .max_tokens = 10});  // 5 blocks > 4
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("whole cache holds 4"), std::string::npos) << s.message();
    s = h.sched.add({.id = 1, .prompt = prompt_of(60, 1), .max_tokens = 10});
    EXPECT_NE(s.message().find("max_model_len 64"), std::string::npos) << s.message();
    EXPECT_EQ(h.sched.add({.id = 1, .prompt = {}, .max_tokens = 1}).code(), StatusCode::kInvalidArgument);
    ASSERT_TRUE(h.sched.add({.id = 1, .prompt = prompt_of(2, 1), .max_tokens = 1}).ok());
    ASSERT_TRUE(h.sched.add({.id = 2, .prompt = prompt_of(2, 2), .max_tokens = 1}).ok());
    EXPECT_EQ(h.sched.add({.id = 3, .prompt = prompt_of(2, 3), .max_tokens = 1}).code(), StatusCode::kResourceExhausted);
}

// Random arrivals and cancellations over many steps: invariants hold after every step (checked
// in Harness::step), everything ends, every block comes back, and each finished request's tokens
// equal its tokens run alone.
TEST(Scheduler, RandomSoak) {
    std::mt19937 rng(20261122);
    Harness h({.num_blocks = 40, .block_size = 4}, {.max_batched_tokens = 24, .max_seqs = 6, .max_waiting = 64});
    std::map<SeqId, std::pair<std::vector<int32_t>, int64_t>> requests;
    SeqId next = 1;
    for (int step = 0; step < 2000; ++step) {
        if (rng() % 3 == 0 && next < 300) {
            const int len = 1 + static_cast<int>(rng() % 30);
            const int64_t max_tokens = 1 + rng() % 20;
            auto prompt = prompt_of(len, static_cast<int>(rng() % 7));  // repeated prompts hit the cache
            if (h.sched.add({.id = next, .prompt = prompt, .max_tokens = max_tokens}).ok())
                requests[next] = {prompt, max_tokens};
            ++next;
        }
        if (rng() % 40 == 0 && !requests.empty()) {
            auto it = requests.begin();
            std::advance(it, rng() % requests.size());
            if (h.sched.finish(it->first)) requests.erase(it);
        }
        h.step();
    }
    h.run_to_end();
    EXPECT_EQ(h.kv.num_free_blocks(), 40);
    int checked = 0;
    for (const auto& [id, out] : h.outputs) {
        auto it = requests.find(id);
        if (it == requests.end()) continue;
        EXPECT_EQ(out, alone(it->second.first, it->second.second)) << "request " << id;
        ++checked;
    }
    EXPECT_GT(checked, 100);
}

}  // namespace
}  // namespace moe
