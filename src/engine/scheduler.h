// Scheduler: decides, step by step, which tokens of which sequences the model computes.
//
// Pure host logic (no backend, no threads): the engine thread calls schedule(), runs the plan,
// then on_step_done(). Each step takes, under max_batched_tokens and max_seqs:
//   1. running decodes (one token each), in admission order, so running streams never starve;
//   2. running sequences still in chunked prefill, in admission order, their next chunk;
//   3. waiting sequences, first come first served, as prefill chunks (first admission tries the
//      prefix cache).
// A chunk is min(remaining tokens, budget left, long_prefill_chunk if set).
// When a running sequence needs a block and none is free, the NEWEST running sequence is
// preempted (even one already placed in this step's plan: it leaves the plan): its blocks are
// freed, num_computed = 0, and it goes back to the FRONT of the waiting queue to be recomputed
// (prompt and generated tokens) later. A running sequence is never preempted to admit a waiting
// one, and nothing new is admitted in a step that preempted.
//
// Prefill/decode disaggregation adds two phases outside both queues, never scheduled and never
// a preemption victim (victims come from the running list only), whose blocks stay allocated:
//   kHandoff   (prefill worker) a sequence whose prompt is computed and whose first token is
//              sampled, held under a lease until the decode worker has pulled its KV; only
//              finish() ends it (release, lease expiry, cancel).
//   kReceiving (decode worker) a sequence admitted with add_prefilled(): its blocks are
//              allocated and count against admission while its KV arrives from the prefill
//              worker; receive_done() then makes it a running decode (its full blocks enter the
//              prefix index), finish() abandons it.
// A prefilled sequence that is later preempted is recomputed here like any other.
//
// max_tokens: the scheduler never stops a sequence (the engine calls finish() on a stop or at
// max_tokens); decode grows the block table one slot at a time, and add() guarantees that prompt
// + max_tokens fits in the whole cache, so a sequence alone can always finish.
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

// kFinished is never seen through Scheduler::get() (finish() forgets the id); it marks a copy of
// a SequenceState the caller kept.
enum class SeqPhase { kWaiting, kRunning, kFinished, kHandoff, kReceiving };

struct SequenceState {
    SeqId id = 0;
    std::vector<int32_t> tokens;  // prompt, then generated tokens
    int64_t num_prompt = 0;
    int64_t num_computed = 0;  // tokens whose KV is in the cache
    int64_t max_tokens = 0;
    int64_t num_cached_prompt = 0;  // prefix-cache hit at first admission (usage)
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

// A sequence admitted by add_prefilled(): what its own prefix cache already held and the blocks
// the rest of the prompt's KV must be written into.
struct ReceivePlan {
    int64_t num_cached_tokens = 0;  // prefix-cache hit (a multiple of the block size)
    int64_t num_cached_blocks = 0;  // table[0, num_cached_blocks) already hold the prompt's KV
    std::vector<int32_t> table;     // the whole block table, blocks_for(prompt) blocks
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

    // INVALID_ARGUMENT naming the limit (empty prompt, max_tokens < 1, prompt + max_tokens over
    // max_model_len or over the whole cache, an id still live); RESOURCE_EXHAUSTED when
    // max_waiting requests wait. On error nothing changes.
    Status add(NewRequest request);

    // One step's plan. Blocks for every scheduled token are allocated when this returns; the ids
    // in plan.preempted lost theirs (and may be scheduled again only in a later step). A plan
    // with no seqs means nothing can run now (only when there is no work, given add()'s checks).
    StepPlan schedule();

    // After the model ran `plan`: advances num_computed, appends sampled[i] where plan.seqs[i]
    // samples (sampled is parallel to plan.seqs; a shorter span is a caller bug and aborts), and
    // indexes newly full blocks in the prefix cache. Sequences finished meanwhile are skipped.
    void on_step_done(const StepPlan& plan, std::span<const int32_t> sampled);

    // Ends a request in any phase and frees its blocks. False for an unknown id.
    bool finish(SeqId id);

    // ---- disaggregation (see the phases above)
    // A running sequence whose last step computed its whole prompt and sampled its first token
    // becomes kHandoff: it leaves the running list, keeps its blocks. False unless running.
    bool hold_for_handoff(SeqId id);
    // Admits a sequence whose prompt's KV comes from elsewhere: tokens = prompt + first_token,
    // phase kReceiving. Attaches the longest cached prefix and allocates the rest of the prompt's
    // blocks. The same INVALID_ARGUMENT checks as add() (request.max_tokens is the real one and
    // counts first_token); RESOURCE_EXHAUSTED when the blocks are not free now (nothing kept:
    // try again later).
    StatusOr<ReceivePlan> add_prefilled(NewRequest request, int32_t first_token);
    // The KV of the prompt of a kReceiving sequence is in its blocks: num_computed = prompt
    // length, full blocks indexed, appended to the running list (a decode next step). False
    // unless receiving.
    bool receive_done(SeqId id);
    size_t num_handoff() const { return num_handoff_; }
    size_t num_receiving() const { return num_receiving_; }

    const SequenceState* get(SeqId id) const;
    size_t num_waiting() const { return waiting_.size(); }
    size_t num_running() const { return running_.size(); }
    bool has_work() const { return !waiting_.empty() || !running_.empty(); }
    KvBlockManager& kv() { return kv_; }
    const SchedulerOptions& options() const { return options_; }

private:
    void preempt(SeqId id, StepPlan& plan, int64_t& budget);
    // Allocates blocks for id up to num_tokens, preempting the newest running sequences until it
    // fits. False when id itself was the newest and got preempted.
    bool grow_or_preempt(SeqId id, int64_t num_tokens, StepPlan& plan, int64_t& budget);
    Status check_new(const NewRequest& r) const;  // add()'s argument checks

    SchedulerOptions options_;
    KvBlockManager& kv_;
    std::unordered_map<SeqId, SequenceState> seqs_;
    std::deque<SeqId> waiting_;
    std::vector<SeqId> running_;  // admission order: the back is the newest
    size_t num_handoff_ = 0;
    size_t num_receiving_ = 0;
};

}  // namespace moe
