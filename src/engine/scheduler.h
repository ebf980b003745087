// Scheduler: decides, step by step, which tokens of which sequences the model computes.
//
// Pure host logic (no backend, no threads): the engine thread calls schedule(), runs the plan,
// then on_step_done(). Each step takes, under max_batched_tokens and max_seqs:
//   1. running sequences first, in admission order (decode: one token; a sequence still in
//      chunked prefill: its next chunk), so running streams never starve;
//   2. then waiting sequences, first come first served, as prefill chunks.
// When a running sequence needs a block and none is free, the NEWEST running sequence is
// preempted: its blocks are freed and it goes back to the front of the waiting queue to be
// recomputed (prompt and generated tokens) later. A running sequence is never preempted to admit
// a waiting one, and nothing new is admitted in a step that preempted.
#pragma once

#include <cstdint>
#include <deque>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/kv_block_manager.h"
#include "moe/status.h"

namespace moe {

struct SchedulerOptions {
    int64_t max_batched_tokens = 2048;  // tokens per step, all sequences together
    int64_t max_seqs = 256;             // sequences per step (and running at once)
    int64_t max_waiting = 1024;         // waiting queue length; beyond: RESOURCE_EXHAUSTED
    int64_t max_model_len = 4096;       // prompt + max_tokens
    int64_t long_prefill_chunk = 0;     // 0: a prefill chunk takes what the budget leaves
};

struct NewRequest {
    SeqId id = 0;
    std::vector<int32_t> prompt;
    int64_t max_tokens = 0;
    std::string cache_salt;
};

enum class SeqPhase { kWaiting, kRunning };

struct SequenceState {
    SeqId id = 0;
    std::vector<int32_t> tokens;     // prompt, then generated tokens
    int64_t num_prompt = 0;
    int64_t num_computed = 0;        // tokens whose KV is in the cache
    int64_t max_tokens = 0;
    int64_t num_cached_prompt = 0;   // prefix-cache hit at first admission (usage)
    int64_t num_preemptions = 0;
    bool admitted_once = false;
    SeqPhase phase = SeqPhase::kWaiting;
    std::string cache_salt;
    int64_t num_output() const { return static_cast<int64_t>(tokens.size()) - num_prompt; }
};

struct ScheduledSeq {
    SeqId id = 0;
    int64_t start = 0;       // position of the first new token (= num_computed)
    int64_t num_tokens = 0;  // new tokens this step
    bool samples = false;    // the chunk reaches the last known token: its logits give a new one
};

struct StepPlan {
    std::vector<ScheduledSeq> seqs;
    std::vector<SeqId> preempted;
    int64_t num_tokens = 0;
    bool empty() const { return seqs.empty(); }
};

class Scheduler {
public:
    Scheduler(const SchedulerOptions& options, KvBlockManager& kv);

    // INVALID_ARGUMENT naming the limit (empty prompt, prompt + max_tokens over max_model_len or
    // over the whole cache, duplicate id); RESOURCE_EXHAUSTED when max_waiting requests wait.
    Status add(NewRequest request);

    StepPlan schedule();

    // After the model ran `plan`: advances num_computed, appends sampled[i] where plan.seqs[i]
    // samples, and indexes newly full blocks in the prefix cache.
    void on_step_done(const StepPlan& plan, std::span<const int32_t> sampled);

    // Ends a request in any phase and frees its blocks. False for an unknown id.
    bool finish(SeqId id);

    const SequenceState* get(SeqId id) const;
    size_t num_waiting() const { return waiting_.size(); }
    size_t num_running() const { return running_.size(); }
    bool has_work() const { return !waiting_.empty() || !running_.empty(); }
    KvBlockManager& kv() { return kv_; }
    const SchedulerOptions& options() const { return options_; }

private:
    void preempt(SeqId id, StepPlan& plan);

    SchedulerOptions options_;
    KvBlockManager& kv_;
    std::unordered_map<SeqId, SequenceState> seqs_;
    std::deque<SeqId> waiting_;
    std::vector<SeqId> running_;  // admission order: the back is the newest
};

}  // namespace moe
