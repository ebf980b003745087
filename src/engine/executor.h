// Executor: one generation step, the only place where a step is written out.
//
//   step():  Scheduler::schedule()          -> StepPlan (sequences, chunks, preemptions)
//            plan -> BatchView               (token ids, positions, block tables)
//            MoeTransformer::forward         -> ForwardOutput (one logits row per sequence)
//            SequenceSampler::sample per row -> token, raw logprob, top alternatives
//            Scheduler::on_step_done         (sampled tokens appended, KV committed)
//            -> StepResult: one SeqResult per planned sequence, in plan order
//
//   run():   the middle three stages alone, over a batch the caller placed in the cache itself
//            (the benchmarks that pin block tables and inputs to compare with another engine).
//            step() is built on run().
//
// What the Executor knows: sequences (SeqId), token ids, block tables, samplers, the model and
// the KV cache. What it does not know: requests, request ids, sinks, text, detokenizers, stop
// strings, EOS, max_tokens, deadlines. The caller (the engine, a benchmark) turns SeqResults into
// events, decides when a sequence ends, and calls finish().
//
// ## Contract of a step
// - An empty local batch is a legal step: step() with nothing schedulable (or run() with no
//   sequences) returns a StepResult with no seqs. Alone (no expert-parallel group, or a group of
//   one), it does not call the model and ran_forward is false. As a rank of an expert-parallel
//   group of several ranks (MoeTransformer::expert_group()), every rank steps together even when
//   its own batch is empty: this is the single place where that rank calls forward with the
//   empty batch, which joins the group's collectives with zero rows (ran_forward true). A
//   failure of that empty forward has no sequence to fail; the model keeps it
//   (MoeTransformer::expert_parallel_status()) and the caller checks it after the step.
// - Every planned sequence gets exactly one SeqResult (SeqOutcome below). kFailed is per
//   sequence: a forward failure fails every sequence of that batch, a sampling failure only its
//   own sequence; the others of the step are unaffected and their tokens are appended. A failed
//   sequence's state is not advanced (nothing appended, num_computed unchanged); the caller must
//   finish() it. The status of kFailed is always INTERNAL (the cause in the message): a step
//   only fails through a bug or a library/device failure, never through request parameters
//   (validate() and the scheduler's add() refuse those first; the sampler is total).
// - kHandedOff (prefill/decode disaggregation): a sequence added with
//   SeqOptions::handoff_after_prefill gets kHandedOff, not kSampled, in the step that computes
//   the last chunk of its prompt. Its first token was sampled and appended, its prompt's KV is
//   in the cache, and the step moved it to the scheduler's kHandoff phase (never scheduled,
//   never a preemption victim, blocks kept) for the caller to export its KV blocks and state
//   (Scheduler::get(), KvBlockManager::block_table(), sampler()). finish() ends it (lease
//   released, expired or cancelled). When the caller decides the first token ends the request
//   (EOS, a stop, max_tokens = 1), it simply finish()es it.
// - add_prefilled (the decode side): a sequence whose prompt's KV comes from a prefill worker.
//   Its sampler continues the prefill side's RNG stream (the resolved seed, the draws already
//   taken) and has seen the first token; the scheduler holds it in kReceiving until the caller
//   has written the missing blocks and calls receive_done(); from then on it decodes as any other.
// - Preempted sequences (StepResult::preempted) lost their blocks and wait to be recomputed;
//   they have no SeqResult in that step.
// - A sequence's draws do not depend on what else is in the batch: each sequence has its own
//   sampler and RNG (one draw per sampled token). The forward computes each row from that
//   sequence's tokens only (rounding may still differ with the batch's shape; the tests hold the
//   tokens equal alone and in a batch).
//
// Ownership and threads: the Executor holds references to the model, the KV cache and (unless
// built without one, for run() only) the scheduler, which must outlive it, and owns each sequence's SequenceSampler
// from add() to finish(). Not thread-safe: one thread (the engine thread) makes every call. No call aborts on anything
// a request can carry; exceptions (std::bad_alloc) propagate to the caller.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "engine/sampler.h"
#include "engine/scheduler.h"
#include "model/kv_cache.h"
#include "model/moe_transformer.h"
#include "moe/status.h"

namespace moe {

// What one step did for one sequence.
enum class SeqOutcome {
    kPrefilling,  // a prefill chunk short of the last known token was computed: no token yet
    kSampled,     // a token was sampled and appended: decode it in a later step
    kHandedOff,   // prefill done, first token sampled and appended: hand it off, do not decode here
    kFailed,      // nothing was appended; `status` says why (INTERNAL); the caller must finish() it
};

const char* seq_outcome_name(SeqOutcome outcome);

struct SeqResult {
    SeqId id = 0;
    SeqOutcome outcome = SeqOutcome::kPrefilling;
    SampleResult sample;  // kSampled, kHandedOff: the token, its raw logprob, the top alternatives
    Status status;        // kFailed only
};

// Seconds spent in each stage of a step (steady clock). Building the batch view is in none.
struct StepTimes {
    double schedule_s = 0;  // Scheduler::schedule
    double forward_s = 0;   // MoeTransformer::forward
    double sample_s = 0;    // every SequenceSampler::sample of the step
    double update_s = 0;    // Scheduler::on_step_done
};

struct StepResult {
    std::vector<SeqResult> seqs;   // one per planned sequence, in plan order
    std::vector<SeqId> preempted;  // lost their blocks this step; no SeqResult
    int64_t num_tokens = 0;        // tokens computed (all sequences)
    bool ran_forward = false;      // false for an empty local batch (and when no sequence could run)
    StepTimes times;
    bool empty() const { return seqs.empty(); }
};

struct SeqOptions {
    // Prefill/decode disaggregation: end this sequence's step here with kHandedOff once its
    // prompt is computed and its first token sampled.
    bool handoff_after_prefill = false;
};

// One sequence of an explicit batch (Executor::run). The spans must stay valid during run().
struct ExecSeq {
    SeqId id = 0;                          // echoed in its SeqResult
    std::span<const int32_t> token_ids;    // new tokens, at positions [num_cached, num_cached + n)
    int64_t num_cached = 0;                // positions already in the KV cache
    std::span<const int32_t> block_table;  // blocks of positions [0, num_cached + n)
    SequenceSampler* sampler = nullptr;    // null: computed, not sampled (kPrefilling)
};

// Test-only fault injection (tests/engine): never set outside tests. Each hook is checked by one
// null test per step (before_forward) or per sampled sequence (before_sample). A hook may also
// throw, to test what happens when an exception escapes a step.
struct ExecutorFaults {
    std::function<Status()> before_forward;                              // non-OK: the forward fails
    std::function<Status(SeqId, const SequenceSampler&)> before_sample;  // non-OK: this sampling fails
};

class Executor {
public:
    // model, cache and scheduler must outlive the Executor; the scheduler's KvBlockManager must
    // describe `cache` (same block count and size).
    Executor(MoeTransformer& model, KvCache& cache, Scheduler& scheduler);
    // Without a scheduler: run() only (benchmarks that place their batches themselves). add()
    // then returns FAILED_PRECONDITION, step() an empty step, finish() false.
    Executor(MoeTransformer& model, KvCache& cache);
    ~Executor();

    // Adds a sequence: Scheduler::add (its errors, nothing added on error) and a sampler built
    // from `sampling`, which must have passed validate(sampling).
    Status add(NewRequest request, const SamplingParams& sampling, SeqOptions options = {});

    // Ends a sequence in any phase: frees its blocks and its sampler. False for an unknown id.
    bool finish(SeqId id);

    // The decode side of a handoff (see the contract above). request.prompt is the prompt
    // without the first token; request.max_tokens the request's real one. `seed` and `draws`:
    // the prefill side's SequenceSampler::resolved_seed() and num_draws(); draws must be bounded
    // by the caller. Errors as Scheduler::add_prefilled (RESOURCE_EXHAUSTED: no room now,
    // nothing kept).
    StatusOr<ReceivePlan> add_prefilled(NewRequest request, int32_t first_token, const SamplingParams& sampling,
                                        uint64_t seed, uint64_t draws);
    // The missing blocks of a kReceiving sequence are written: it decodes from the next step.
    bool receive_done(SeqId id);

    // One step (see the contract above). Plans with the scheduler; an empty plan is an empty step.
    StepResult step();

    // Forward and sampling over an explicit batch that does not go through the scheduler: the
    // caller chose the blocks and keeps them. One SeqResult per input, in order (kSampled where a
    // sampler was given, else kPrefilling, or kFailed); nothing is appended anywhere. `times`,
    // if given, accumulates forward_s and sample_s. An empty batch returns no results and does
    // not call the model, except in a group (see the contract above).
    std::vector<SeqResult> run(std::span<const ExecSeq> seqs, StepTimes* times = nullptr);

    Scheduler* scheduler() { return scheduler_; }  // null without one
    // The model belongs to an expert-parallel group of more than one rank.
    bool in_group() const;
    const SequenceSampler* sampler(SeqId id) const;  // null for an unknown id

    // Test-only: see ExecutorFaults. Replaces any previous faults; an empty struct clears them.
    void set_faults_for_testing(ExecutorFaults faults);

private:
    struct Seq {
        std::unique_ptr<SequenceSampler> sampler;
        SeqOptions options;
        bool handed_off = false;  // kHandedOff was returned; only finish() may follow
    };

    MoeTransformer& model_;
    KvCache& cache_;
    Scheduler* scheduler_;  // null: run() only
    std::unordered_map<SeqId, Seq> seqs_;
    std::unique_ptr<ExecutorFaults> faults_;  // null outside tests
    // Per-step scratch, reused (no allocation per step once grown).
    std::vector<ExecSeq> batch_;
    std::vector<size_t> batch_pos_;  // batch_[i] is plan.seqs[batch_pos_[i]]
};

}  // namespace moe
