// Scheduler tests, step by step, against a mock executor.
//
// Diagrams: one row per step, one column per sequence; "P7" = a prefill chunk of 7 tokens,
// "D" = one decode token, "-" = not scheduled, "x" = preempted in that step.
#include "engine/scheduler.h"

#include <gtest/gtest.h>

#include <limits>
#include <map>
#include <random>
#include <set>

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
    Harness(KvBlockManagerOptions kv_opt, SchedulerOptions opt) : opt(opt), kv(kv_opt), sched(opt, kv) {}

    Status add(SeqId id, std::vector<int32_t> prompt, int64_t max_tokens, std::string salt = "") {
        Status s =
            sched.add({.id = id, .prompt = std::move(prompt), .max_tokens = max_tokens, .cache_salt = std::move(salt)});
        if (s.ok()) live.insert(id);
        return s;
    }
    bool cancel(SeqId id) {
        live.erase(id);
        return sched.finish(id);
    }

    // Runs one step like the engine would: schedule, "execute" (checking the plan against the
    // sequence states and block tables), sample, then finish sequences at max_tokens.
    StepPlan step() {
        StepPlan plan = sched.schedule();
        cells.clear();
        int64_t sum = 0;
        std::vector<int32_t> sampled(plan.seqs.size(), -1);
        for (size_t i = 0; i < plan.seqs.size(); ++i) {
            const ScheduledSeq& s = plan.seqs[i];
            const SequenceState* st = sched.get(s.id);
            EXPECT_NE(st, nullptr);
            if (!st) continue;
            EXPECT_EQ(st->phase, SeqPhase::kRunning);
            EXPECT_EQ(s.start, st->num_computed);
            EXPECT_GE(s.num_tokens, 1);
            EXPECT_LE(s.start + s.num_tokens, static_cast<int64_t>(st->tokens.size()));
            EXPECT_EQ(s.samples, s.start + s.num_tokens == static_cast<int64_t>(st->tokens.size()));
            EXPECT_GE(static_cast<int64_t>(kv.block_table(s.id).size()) * kv.block_size(), s.start + s.num_tokens);
            if (s.samples) sampled[i] = mock_next(st->tokens);
            cells[s.id] = s.num_tokens == 1 && s.start >= st->num_prompt ? "D" : "P" + std::to_string(s.num_tokens);
            sum += s.num_tokens;
        }
        for (SeqId p : plan.preempted) {
            cells[p] = "x";
            EXPECT_EQ(sched.get(p)->phase, SeqPhase::kWaiting);
            EXPECT_EQ(sched.get(p)->num_computed, 0);
            EXPECT_TRUE(kv.block_table(p).empty());
        }
        EXPECT_EQ(plan.num_tokens, sum);
        EXPECT_LE(plan.num_tokens, opt.max_batched_tokens);
        EXPECT_LE(static_cast<int64_t>(plan.seqs.size()), opt.max_seqs);
        EXPECT_LE(static_cast<int64_t>(sched.num_running()), opt.max_seqs);
        sched.on_step_done(plan, sampled);
        for (const ScheduledSeq& s : plan.seqs) {
            const SequenceState* st = sched.get(s.id);
            if (s.samples && st->num_output() >= st->max_tokens) {
                outputs[s.id] = std::vector<int32_t>(st->tokens.begin() + st->num_prompt, st->tokens.end());
                cached_prompt[s.id] = st->num_cached_prompt;
                preemptions[s.id] = st->num_preemptions;
                live.erase(s.id);
                EXPECT_TRUE(sched.finish(s.id));
            }
        }
        check_invariants();
        return plan;
    }

    // Checked independently of the manager's own check: no block in two live tables unless it is
    // a cached prefix block, and free + used == total.
    void check_invariants() {
        std::string why;
        EXPECT_TRUE(kv.check_invariants(&why)) << why;
        std::map<int32_t, int> owners;
        for (SeqId id : live)
            for (int32_t b : kv.block_table(id)) ++owners[b];
        for (const auto& [b, n] : owners) {
            if (n > 1) EXPECT_TRUE(kv.is_cached(b)) << "block " << b << " in " << n << " tables, not a cached prefix";
            EXPECT_EQ(kv.ref_count(b), n) << "block " << b;
        }
        EXPECT_EQ(kv.num_free_blocks() + static_cast<int64_t>(owners.size()), kv.num_total_blocks());
        EXPECT_EQ(sched.num_waiting() + sched.num_running(), live.size());
    }

    void run_to_end(int max_steps = 10000) {
        for (int i = 0; i < max_steps && sched.has_work(); ++i) step();
        EXPECT_FALSE(sched.has_work());
    }

    // The last step's row for `ids`, e.g. "D P9 -".
    std::string row(const std::vector<SeqId>& ids) const {
        std::string out;
        for (SeqId id : ids) {
            auto it = cells.find(id);
            out += (out.empty() ? "" : " ") + (it == cells.end() ? std::string("-") : it->second);
        }
        return out;
    }
    std::string step_row(const std::vector<SeqId>& ids) {
        step();
        return row(ids);
    }

    SchedulerOptions opt;
    KvBlockManager kv;
    Scheduler sched;
    std::set<SeqId> live;
    std::map<SeqId, std::string> cells;
    std::map<SeqId, std::vector<int32_t>> outputs;
    std::map<SeqId, int64_t> cached_prompt, preemptions;
};

std::vector<int32_t> prompt_of(int n, int seed) {
    std::vector<int32_t> p(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) p[static_cast<size_t>(i)] = (seed * 131 + i * 7) % 500;
    return p;
}

// Output of one request run alone in a roomy cache.
std::vector<int32_t> alone(const std::vector<int32_t>& prompt, int64_t max_tokens) {
    Harness h({.num_blocks = 256, .block_size = 4}, {.max_batched_tokens = 64});
    EXPECT_TRUE(h.add(1, prompt, max_tokens).ok());
    h.run_to_end();
    EXPECT_EQ(h.preemptions.at(1), 0);
    return h.outputs.at(1);
}

TEST(Scheduler, MockTokensDependOnTheWholeSequence) {
    // Guards the preemption and prefix tests: a wrong recompute would change the tokens.
    EXPECT_NE(alone(prompt_of(8, 1), 4), alone(prompt_of(8, 2), 4));
    auto p = prompt_of(8, 1);
    p[0] += 1;
    EXPECT_NE(alone(p, 4), alone(prompt_of(8, 1), 4));
}

TEST(Scheduler, LongPromptIsChunkedUnderTheTokenBudget) {
    Harness h({.num_blocks = 64, .block_size = 4}, {.max_batched_tokens = 8});
    ASSERT_TRUE(h.add(1, prompt_of(20, 1), 3).ok());
    //          seq 1
    // step 1:  P8      positions 0..7
    // step 2:  P8      8..15
    // step 3:  P4      16..19, samples the first token
    // step 4:  D
    // step 5:  D       third token: finished
    EXPECT_EQ(h.step_row({1}), "P8");
    EXPECT_EQ(h.sched.get(1)->num_output(), 0);
    EXPECT_EQ(h.kv.block_table(1).size(), 2u);  // blocks only for the chunk, not the whole prompt
    EXPECT_EQ(h.step_row({1}), "P8");
    EXPECT_EQ(h.step_row({1}), "P4");
    EXPECT_EQ(h.sched.get(1)->num_output(), 1);
    EXPECT_EQ(h.step_row({1}), "D");
    EXPECT_EQ(h.step_row({1}), "D");
    EXPECT_FALSE(h.sched.has_work());
    EXPECT_EQ(h.outputs.at(1), alone(prompt_of(20, 1), 3));
}

TEST(Scheduler, LongPrefillChunkCapsEachChunk) {
    Harness h({.num_blocks = 64, .block_size = 4}, {.max_batched_tokens = 10, .long_prefill_chunk = 4});
    ASSERT_TRUE(h.add(1, prompt_of(9, 1), 2).ok());
    ASSERT_TRUE(h.add(2, prompt_of(9, 2), 2).ok());
    ASSERT_TRUE(h.add(3, prompt_of(9, 3), 2).ok());
    //          seq1 seq2 seq3
    // step 1:  P4   P4   P2     chunks of at most 4; seq 3 gets what the budget leaves
    // step 2:  P4   P4   P2
    // step 3:  P1   P1   P4     seq 1 and 2 finish their prompts and sample
    // step 4:  D    D    P1
    // step 5:  -    -    D      seq 1 and 2 are done (2 tokens each)
    EXPECT_EQ(h.step_row({1, 2, 3}), "P4 P4 P2");
    EXPECT_EQ(h.step_row({1, 2, 3}), "P4 P4 P2");
    EXPECT_EQ(h.step_row({1, 2, 3}), "P1 P1 P4");
    EXPECT_EQ(h.step_row({1, 2, 3}), "D D P1");
    EXPECT_EQ(h.step_row({1, 2, 3}), "- - D");
    EXPECT_FALSE(h.sched.has_work());
    for (SeqId id = 1; id <= 3; ++id) EXPECT_EQ(h.outputs.at(id), alone(prompt_of(9, static_cast<int>(id)), 2));
}

TEST(Scheduler, DecodeGoesFirstAndPrefillFillsTheRestOfTheStep) {
    Harness h({.num_blocks = 64, .block_size = 4}, {.max_batched_tokens = 10});
    ASSERT_TRUE(h.add(1, prompt_of(6, 1), 8).ok());
    EXPECT_EQ(h.step_row({1}), "P6");
    ASSERT_TRUE(h.add(2, prompt_of(15, 2), 8).ok());
    //          seq1 seq2
    // step 2:  D    P9     decode first, then 9 of seq 2's 15 prompt tokens (budget 10)
    // step 3:  D    P6     the rest of seq 2's prompt, which samples
    // step 4:  D    D
    StepPlan p = h.step();
    EXPECT_EQ(h.row({1, 2}), "D P9");
    EXPECT_EQ(p.seqs[0].id, 1u);  // running sequences come first
    EXPECT_FALSE(p.seqs[1].samples);
    p = h.step();
    EXPECT_EQ(h.row({1, 2}), "D P6");
    EXPECT_TRUE(p.seqs[1].samples);
    EXPECT_EQ(h.step_row({1, 2}), "D D");
    h.run_to_end();
    EXPECT_EQ(h.outputs.at(1), alone(prompt_of(6, 1), 8));
    EXPECT_EQ(h.outputs.at(2), alone(prompt_of(15, 2), 8));
}

// A running sequence still in chunked prefill comes after every running decode, even one
// admitted later, so decodes keep their place when prefill chunks fill the budget.
TEST(Scheduler, RunningDecodesGoBeforeRunningPrefillChunks) {
    Harness h({.num_blocks = 64, .block_size = 4}, {.max_batched_tokens = 6, .long_prefill_chunk = 4});
    ASSERT_TRUE(h.add(1, prompt_of(20, 1), 2).ok());
    ASSERT_TRUE(h.add(2, prompt_of(2, 2), 3).ok());
    //          seq1 seq2
    // step 1:  P4   P2     seq 2 samples
    // step 2:  P4   D      plan order: seq 2's decode first, then seq 1's chunk
    StepPlan p = h.step();
    EXPECT_EQ(h.row({1, 2}), "P4 P2");
    p = h.step();
    EXPECT_EQ(h.row({1, 2}), "P4 D");
    ASSERT_EQ(p.seqs.size(), 2u);
    EXPECT_EQ(p.seqs[0].id, 2u);
    h.run_to_end();
    EXPECT_EQ(h.outputs.at(1), alone(prompt_of(20, 1), 2));
    EXPECT_EQ(h.outputs.at(2), alone(prompt_of(2, 2), 3));
}

TEST(Scheduler, MaxSeqsCapsAStepAndTheRunningSet) {
    Harness h({.num_blocks = 64, .block_size = 4}, {.max_batched_tokens = 100, .max_seqs = 2});
    ASSERT_TRUE(h.add(1, prompt_of(3, 1), 2).ok());
    ASSERT_TRUE(h.add(2, prompt_of(3, 2), 4).ok());
    ASSERT_TRUE(h.add(3, prompt_of(3, 3), 2).ok());
    //          seq1 seq2 seq3
    // step 1:  P3   P3   -      two sequences at most, though the budget has room
    // step 2:  D    D    -      seq 1 done
    // step 3:  -    D    P3     its place goes to seq 3
    EXPECT_EQ(h.step_row({1, 2, 3}), "P3 P3 -");
    EXPECT_EQ(h.sched.num_waiting(), 1u);
    EXPECT_EQ(h.step_row({1, 2, 3}), "D D -");
    EXPECT_EQ(h.step_row({1, 2, 3}), "- D P3");
    h.run_to_end();
    EXPECT_EQ(h.outputs.size(), 3u);
}

TEST(Scheduler, OutOfBlocksPreemptsTheNewestWhichLaterFinishesWithTheSameTokens) {
    // 6 blocks of 4 tokens; two prompts of 8 tokens, 8 new tokens each: 16 tokens = 4 blocks
    // each, 8 in all, so they cannot both run to the end together. Seq 3 arrives before step 2.
    Harness h({.num_blocks = 6, .block_size = 4}, {.max_batched_tokens = 32});
    ASSERT_TRUE(h.add(1, prompt_of(8, 1), 8).ok());
    ASSERT_TRUE(h.add(2, prompt_of(8, 2), 8).ok());
    //          seq1 seq2 seq3  blocks used
    // step 1:  P8   P8         4           each samples its 1st token
    // step 2:  D    D    -     6           position 8 opens each one's 3rd block; seq 3 must wait
    // step 3-5 D    D    -     6           positions 9..11
    // step 6:  D    x    -     4           seq 1's position 12 needs a 4th block: seq 2 (newest)
    //                                      goes back to the FRONT of the queue, before seq 3; its
    //                                      3rd block is evicted for seq 1
    // step 7:  D    -    -                 seq 2 (13 tokens) would need 2 blocks beyond its 2
    // step 8:  D    -    -                 cached ones: not admitted, seq 3 does not overtake it,
    //                                      and seq 1 is never preempted for them; seq 1 done
    // step 9:  -    P5   P4    seq 2 attaches its 2 cached blocks (8 tokens) and recomputes 5
    //                          (positions 8..12: its own 5 tokens), then samples its 6th token
    // step 10-11: - D    -
    const std::vector<std::string> want = {"P8 P8 -", "D D -", "D D -",   "D D -", "D D -", "D x -",
                                           "D - -",   "D - -", "- P5 P4", "- D -", "- D -"};
    for (size_t i = 0; i < want.size(); ++i) {
        if (i == 1) ASSERT_TRUE(h.add(3, prompt_of(4, 3), 1).ok());
        EXPECT_EQ(h.step_row({1, 2, 3}), want[i]) << "step " << i + 1;
        if (i == 5) {
            EXPECT_EQ(h.kv.block_table(1).size(), 4u);
            EXPECT_EQ(h.sched.get(2)->num_output(), 5);  // generated tokens are kept
            EXPECT_EQ(h.sched.get(2)->num_preemptions, 1);
            EXPECT_EQ(h.sched.num_waiting(), 2u);
        }
    }
    EXPECT_FALSE(h.sched.has_work());
    EXPECT_EQ(h.preemptions.at(1), 0);
    EXPECT_EQ(h.preemptions.at(2), 1);
    EXPECT_EQ(h.cached_prompt.at(2), 0);  // usage counts the first admission's hit only
    EXPECT_EQ(h.outputs.at(1), alone(prompt_of(8, 1), 8));
    EXPECT_EQ(h.outputs.at(2), alone(prompt_of(8, 2), 8));
    EXPECT_EQ(h.outputs.at(3), alone(prompt_of(4, 3), 1));
    EXPECT_EQ(h.kv.num_free_blocks(), 6);
}

// The newest running sequence is preempted even when it is already in this step's plan (its
// decode came first), because an older sequence's prefill chunk needs the block.
TEST(Scheduler, PreemptedVictimLeavesThePlan) {
    Harness h({.num_blocks = 5, .block_size = 4}, {.max_batched_tokens = 8, .long_prefill_chunk = 4});
    ASSERT_TRUE(h.add(1, prompt_of(16, 1), 4).ok());
    ASSERT_TRUE(h.add(2, prompt_of(4, 2), 4).ok());
    //          seq1 seq2   blocks used
    // step 1:  P4   P4     2
    // step 2:  P4   D      4      seq 2's position 4 opens its 2nd block
    // step 3:  P4   D      5
    // step 4:  P4   x      4      seq 1's last chunk needs a 4th block: seq 2 leaves the plan
    // step 5-7: D   -             seq 1 decodes to 4 tokens (its 5th block evicts seq 2's cached
    //                             head); seq 2 cannot come back meanwhile
    // step 8:  -    P4     seq 2 recomputes its prompt and 3 tokens, in chunks of 4:
    // step 9:  -    P3     positions 4..6, which samples its 4th and last token
    const std::vector<std::string> want = {"P4 P4", "P4 D", "P4 D", "P4 x", "D -", "D -", "D -", "- P4", "- P3"};
    for (size_t i = 0; i < want.size(); ++i) {
        StepPlan p = h.step();
        EXPECT_EQ(h.row({1, 2}), want[i]) << "step " << i + 1;
        if (i == 3) {
            EXPECT_EQ(p.num_tokens, 4);  // seq 2's token went back to the budget
            ASSERT_EQ(p.seqs.size(), 1u);
            EXPECT_EQ(p.preempted, std::vector<SeqId>{2});
        }
    }
    EXPECT_FALSE(h.sched.has_work());
    EXPECT_EQ(h.preemptions.at(2), 1);
    EXPECT_EQ(h.outputs.at(1), alone(prompt_of(16, 1), 4));
    EXPECT_EQ(h.outputs.at(2), alone(prompt_of(4, 2), 4));
}

TEST(Scheduler, PrefixCacheHitSharesTheCachedBlocks) {
    Harness h({.num_blocks = 64, .block_size = 16}, {.max_batched_tokens = 256});
    const auto first = prompt_of(40, 9);  // blocks [0,16) [16,32) full, [32,40) partial
    ASSERT_TRUE(h.add(1, first, 10).ok());
    EXPECT_EQ(h.step_row({1}), "P40");
    EXPECT_EQ(h.kv.num_cached_blocks(), 2);
    auto second = first;
    second.resize(36);
    second.push_back(7);  // same first 32 tokens, different tail
    ASSERT_TRUE(h.add(2, second, 3).ok());
    //          seq1 seq2
    // step 2:  D    P5     seq 2 starts at position 32: 2 blocks attached, 37 - 32 computed
    StepPlan p = h.step();
    EXPECT_EQ(h.row({1, 2}), "D P5");
    EXPECT_EQ(p.seqs[1].start, 32);
    EXPECT_EQ(h.sched.get(2)->num_cached_prompt, 32);
    for (size_t b = 0; b < 2; ++b) {
        EXPECT_EQ(h.kv.block_table(2)[b], h.kv.block_table(1)[b]);
        EXPECT_EQ(h.kv.ref_count(h.kv.block_table(1)[b]), 2);
    }
    EXPECT_NE(h.kv.block_table(2)[2], h.kv.block_table(1)[2]);
    h.run_to_end();
    EXPECT_EQ(h.cached_prompt.at(1), 0);
    EXPECT_EQ(h.cached_prompt.at(2), 32);
    EXPECT_EQ(h.outputs.at(1), alone(first, 10));
    EXPECT_EQ(h.outputs.at(2), alone(second, 3));
}

TEST(Scheduler, SaltIsolatesTheCache) {
    Harness h({.num_blocks = 64, .block_size = 16}, {.max_batched_tokens = 256});
    const auto prompt = prompt_of(40, 9);
    ASSERT_TRUE(h.add(1, prompt, 2, "tenant-a").ok());
    h.run_to_end();
    ASSERT_TRUE(h.add(2, prompt, 2, "tenant-b").ok());  // same tokens, other salt: a miss
    ASSERT_TRUE(h.add(3, prompt, 2).ok());              // no salt: a miss too
    StepPlan p = h.step();
    EXPECT_EQ(h.row({2, 3}), "P40 P40");
    EXPECT_EQ(p.seqs[0].start, 0);
    h.run_to_end();
    EXPECT_EQ(h.cached_prompt.at(2), 0);
    EXPECT_EQ(h.cached_prompt.at(3), 0);
    ASSERT_TRUE(h.add(4, prompt, 2, "tenant-a").ok());  // the same salt again: a hit
    EXPECT_EQ(h.step_row({4}), "P8");
    h.run_to_end();
    EXPECT_EQ(h.cached_prompt.at(4), 32);
    for (SeqId id = 1; id <= 4; ++id) EXPECT_EQ(h.outputs.at(id), alone(prompt, 2));
}

TEST(Scheduler, FinishInAnyPhaseReturnsEveryBlock) {
    Harness h({.num_blocks = 8, .block_size = 4}, {.max_batched_tokens = 6});
    ASSERT_TRUE(h.add(1, prompt_of(10, 1), 20).ok());
    ASSERT_TRUE(h.add(2, prompt_of(10, 2), 20).ok());
    h.step();  // seq 1 mid-prefill (P6), seq 2 waiting
    EXPECT_EQ(h.row({1, 2}), "P6 -");
    EXPECT_TRUE(h.cancel(2));   // waiting
    EXPECT_TRUE(h.cancel(1));   // running, mid-prefill
    EXPECT_FALSE(h.cancel(1));  // unknown now
    EXPECT_EQ(h.sched.get(1), nullptr);
    EXPECT_FALSE(h.sched.has_work());
    EXPECT_EQ(h.kv.num_free_blocks(), 8);

    // Decoding, sharing cached prefix blocks, and preempted back to waiting.
    ASSERT_TRUE(h.add(3, prompt_of(9, 3), 20).ok());
    for (int i = 0; i < 3; ++i) h.step();  // P6 P3 D: 2 full blocks cached
    ASSERT_TRUE(h.add(4, prompt_of(9, 3), 20).ok());
    h.step();
    EXPECT_EQ(h.row({3, 4}), "D P1");  // 8 tokens attached
    EXPECT_EQ(h.kv.ref_count(h.kv.block_table(3)[0]), 2);
    for (int i = 0; i < 40 && h.sched.num_waiting() == 0; ++i) h.step();  // until one is preempted
    ASSERT_EQ(h.sched.num_waiting(), 1u);
    EXPECT_EQ(h.sched.get(4)->phase, SeqPhase::kWaiting);
    EXPECT_EQ(h.sched.get(4)->num_preemptions, 1);
    EXPECT_TRUE(h.cancel(4));  // preempted, waiting
    EXPECT_TRUE(h.cancel(3));  // decoding
    h.check_invariants();
    EXPECT_EQ(h.kv.num_free_blocks(), 8);
    EXPECT_GT(h.kv.num_cached_blocks(), 0);  // cached blocks stay, evictable
    EXPECT_FALSE(h.sched.has_work());
    EXPECT_TRUE(h.sched.schedule().empty());
}

TEST(Scheduler, RejectsWhatCanNeverRunAndAFullQueue) {
    Harness h({.num_blocks = 4, .block_size = 4}, {.max_waiting = 2, .max_model_len = 64});
    Status s = h.add(1, prompt_of(10, 1), 10);  // 20 tokens: 5 blocks > 4
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("whole cache holds 4"), std::string::npos) << s.message();
    s = h.add(1, prompt_of(60, 1), 10);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("max_model_len 64"), std::string::npos) << s.message();
    s = h.add(1, prompt_of(2, 1), std::numeric_limits<int64_t>::max());
    EXPECT_NE(s.message().find("max_model_len 64"), std::string::npos) << s.message();
    s = h.add(1, {}, 1);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("prompt"), std::string::npos) << s.message();
    s = h.add(1, prompt_of(2, 1), 0);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("max_tokens"), std::string::npos) << s.message();
    EXPECT_TRUE(h.add(1, prompt_of(8, 1), 8).ok());  // exactly the whole cache: accepted
    ASSERT_TRUE(h.add(2, prompt_of(2, 2), 1).ok());
    EXPECT_EQ(h.add(2, prompt_of(2, 2), 1).code(), StatusCode::kResourceExhausted);  // queue full first
    s = h.add(3, prompt_of(2, 3), 1);
    EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
    EXPECT_NE(s.message().find("2"), std::string::npos) << s.message();
    EXPECT_EQ(h.step_row({1, 2}), "P8 P2");  // both admitted (seq 2 done): the queue has room again
    s = h.add(1, prompt_of(2, 1), 1);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);  // seq 1 is still running
    EXPECT_NE(s.message().find("already exists"), std::string::npos) << s.message();
    EXPECT_TRUE(h.add(3, prompt_of(2, 3), 1).ok());
    h.run_to_end();
    EXPECT_EQ(h.outputs.size(), 3u);
    EXPECT_EQ(h.outputs.at(1), alone(prompt_of(8, 1), 8));
}

// Random arrivals (shared prompts, two salts, varied lengths) and cancellations in every
// phase over 2000 steps on a cache small enough to preempt: the invariants hold after every
// step (Harness::step), everything ends, every block comes back, and each request that ran to
// its max_tokens produced exactly its tokens run alone.
TEST(Scheduler, RandomSoak) {
    std::mt19937 rng(20261122);
    Harness h({.num_blocks = 40, .block_size = 4},
              {.max_batched_tokens = 24, .max_seqs = 6, .max_waiting = 16, .long_prefill_chunk = 10});
    std::map<SeqId, std::pair<std::vector<int32_t>, int64_t>> requests;
    SeqId next = 1;
    int rejected = 0, cancelled = 0;
    for (int step = 0; step < 2000; ++step) {
        if (rng() % 3 == 0) {
            const int len = 1 + static_cast<int>(rng() % 40);
            const int64_t max_tokens = 1 + rng() % 30;
            auto prompt = prompt_of(len, static_cast<int>(rng() % 5));  // repeats hit the cache
            const std::string salt = rng() % 4 == 0 ? "s" : "";
            Status s = h.add(next, prompt, max_tokens, salt);
            if (s.ok()) {
                requests[next] = {prompt, max_tokens};
            } else {
                EXPECT_TRUE(s.code() == StatusCode::kResourceExhausted || s.code() == StatusCode::kInvalidArgument)
                    << s.to_string();
                ++rejected;
            }
            ++next;
        }
        if (rng() % 25 == 0 && !h.live.empty()) {
            auto it = h.live.begin();
            std::advance(it, rng() % h.live.size());
            const SeqId id = *it;
            EXPECT_TRUE(h.cancel(id));
            requests.erase(id);
            ++cancelled;
        }
        h.step();
    }
    h.run_to_end();
    EXPECT_EQ(h.kv.num_free_blocks(), 40);
    EXPECT_TRUE(h.live.empty());
    int64_t total_preemptions = 0, total_cached = 0;
    for (const auto& [id, req] : requests) {
        ASSERT_TRUE(h.outputs.count(id)) << "request " << id << " never finished";
        EXPECT_EQ(h.outputs.at(id), alone(req.first, req.second)) << "request " << id;
        total_preemptions += h.preemptions.at(id);
        total_cached += h.cached_prompt.at(id);
    }
    // The soak must actually exercise what it claims to.
    EXPECT_GT(requests.size(), 300u);
    EXPECT_GT(cancelled, 20);
    EXPECT_GT(rejected, 0);
    EXPECT_GT(total_preemptions, 0);
    EXPECT_GT(total_cached, 0);
    std::cout << requests.size() << " completed, " << cancelled << " cancelled, " << rejected << " rejected, "
              << total_preemptions << " preemptions, " << total_cached << " cached prompt tokens\n";
}

}  // namespace
}  // namespace moe

namespace moe {
namespace {

// Disaggregation's phases, step by step (token diagrams as above):
//   prefill side, seq 1 (6 tokens, handed off):  P6 -> kHandoff (held, not planned, not a victim)
//   decode side, seq 5 (same prompt, prefilled):  kReceiving (invisible) -> receive_done -> D
TEST(SchedulerDisagg, HandoffAndReceivingHoldBlocksOutsideTheQueues) {
    KvBlockManager kv({.num_blocks = 8, .block_size = 4});
    Scheduler s({.max_model_len = 64}, kv);
    const std::vector<int32_t> prompt = {1, 2, 3, 4, 5, 6};
    ASSERT_TRUE(s.add({.id = 1, .prompt = prompt, .max_tokens = 1}).ok());
    StepPlan plan = s.schedule();
    ASSERT_EQ(plan.seqs.size(), 1u);
    EXPECT_EQ(plan.seqs[0].num_tokens, 6);
    EXPECT_TRUE(plan.seqs[0].samples);
    const int32_t first = 42;
    s.on_step_done(plan, std::vector<int32_t>{first});
    EXPECT_TRUE(s.hold_for_handoff(1));
    EXPECT_FALSE(s.hold_for_handoff(1));  // only from running
    EXPECT_EQ(s.get(1)->phase, SeqPhase::kHandoff);
    EXPECT_EQ(s.num_handoff(), 1u);
    EXPECT_EQ(s.num_running(), 0u);
    EXPECT_FALSE(s.has_work());
    EXPECT_EQ(kv.block_table(1).size(), 2u);
    EXPECT_TRUE(s.schedule().empty());  // never planned again
    // A newcomer that needs more than what is free waits: the held blocks are no victim.
    ASSERT_TRUE(s.add({.id = 2, .prompt = std::vector<int32_t>(25, 9), .max_tokens = 4}).ok());  // 7 blocks
    plan = s.schedule();
    EXPECT_TRUE(plan.empty());
    EXPECT_TRUE(plan.preempted.empty());
    EXPECT_EQ(kv.block_table(1).size(), 2u);
    std::string why;
    EXPECT_TRUE(kv.check_invariants(&why)) << why;
    EXPECT_TRUE(s.finish(1));  // lease released
    EXPECT_EQ(s.num_handoff(), 0u);
    EXPECT_TRUE(s.finish(2));
    EXPECT_EQ(kv.num_free_blocks(), 8);

    // Decode side: the first full block of the prompt is in the prefix cache (seq 1 committed
    // it), so only the partial second block must arrive.
    StatusOr<ReceivePlan> rp = s.add_prefilled({.id = 5, .prompt = prompt, .max_tokens = 4}, first);
    ASSERT_TRUE(rp.ok()) << rp.status().to_string();
    EXPECT_EQ(rp->num_cached_tokens, 4);
    EXPECT_EQ(rp->num_cached_blocks, 1);
    ASSERT_EQ(rp->table.size(), 2u);
    EXPECT_EQ(s.get(5)->phase, SeqPhase::kReceiving);
    EXPECT_EQ(s.get(5)->tokens.size(), 7u);  // prompt + first token
    EXPECT_EQ(s.num_receiving(), 1u);
    EXPECT_EQ(kv.num_free_blocks(), 6);  // counted against admission
    EXPECT_TRUE(s.schedule().empty());   // invisible to scheduling
    EXPECT_TRUE(s.receive_done(5));
    EXPECT_FALSE(s.receive_done(5));
    EXPECT_EQ(s.num_receiving(), 0u);
    plan = s.schedule();
    ASSERT_EQ(plan.seqs.size(), 1u);
    EXPECT_EQ(plan.seqs[0].start, 6);  // D: the first token's position
    EXPECT_EQ(plan.seqs[0].num_tokens, 1);
    EXPECT_TRUE(plan.seqs[0].samples);
    s.on_step_done(plan, std::vector<int32_t>{7});
    EXPECT_EQ(s.get(5)->num_output(), 2);
    EXPECT_TRUE(kv.check_invariants(&why)) << why;

    // No room: refused with RESOURCE_EXHAUSTED and nothing kept.
    const int64_t free_before = kv.num_free_blocks();
    StatusOr<ReceivePlan> full =
        s.add_prefilled({.id = 6, .prompt = std::vector<int32_t>(27, 3), .max_tokens = 4}, 1);  // 7 of 6 free
    EXPECT_EQ(full.status().code(), StatusCode::kResourceExhausted) << full.status().to_string();
    EXPECT_EQ(s.get(6), nullptr);
    EXPECT_EQ(kv.num_free_blocks(), free_before);
    // The same argument checks as add().
    EXPECT_EQ(s.add_prefilled({.id = 7, .prompt = {}, .max_tokens = 4}, 1).status().code(),
              StatusCode::kInvalidArgument);
    EXPECT_EQ(s.add_prefilled({.id = 5, .prompt = prompt, .max_tokens = 4}, 1).status().code(),
              StatusCode::kInvalidArgument);  // id in use
    // Abandoned while receiving: finish() frees.
    ASSERT_TRUE(s.add_prefilled({.id = 8, .prompt = {5, 5, 5}, .max_tokens = 2}, 1).ok());
    EXPECT_TRUE(s.finish(8));
    EXPECT_EQ(s.num_receiving(), 0u);
    EXPECT_TRUE(kv.check_invariants(&why)) << why;
}

}  // namespace
}  // namespace moe
