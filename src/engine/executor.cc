#include "engine/executor.h"

#include <chrono>
#include <string>
#include <utility>

namespace moe {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
    return std::chrono::duration<double>(Clock::now() - t0).count();
}

SeqResult failed(SeqId id, std::string message) {
    SeqResult r;
    r.id = id;
    r.outcome = SeqOutcome::kFailed;
    r.status = internal_error(std::move(message));
    return r;
}

}  // namespace

const char* seq_outcome_name(SeqOutcome outcome) {
    switch (outcome) {
        case SeqOutcome::kPrefilling:
            return "prefilling";
        case SeqOutcome::kSampled:
            return "sampled";
        case SeqOutcome::kHandedOff:
            return "handed_off";
        case SeqOutcome::kFailed:
            return "failed";
    }
    return "unknown";
}

Executor::Executor(MoeTransformer& model, KvCache& cache, Scheduler& scheduler)
    : model_(model), cache_(cache), scheduler_(&scheduler) {}

Executor::Executor(MoeTransformer& model, KvCache& cache) : model_(model), cache_(cache), scheduler_(nullptr) {}

Executor::~Executor() = default;

bool Executor::in_group() const {
    return model_.expert_group() != nullptr && model_.expert_group()->size() > 1;
}

Status Executor::add(NewRequest request, const SamplingParams& sampling, SeqOptions options) {
    const SeqId id = request.id;
    // The sampler reads the prompt (repetition penalty) before the scheduler takes it.
    if (scheduler_ == nullptr) return failed_precondition("executor: add() needs a scheduler");
    auto sampler = std::make_unique<SequenceSampler>(sampling, request.prompt);
    MOE_RETURN_IF_ERROR(scheduler_->add(std::move(request)));
    seqs_[id] = Seq{.sampler = std::move(sampler), .options = options, .handed_off = false};
    return ok_status();
}

StatusOr<ReceivePlan> Executor::add_prefilled(NewRequest request, int32_t first_token, const SamplingParams& sampling,
                                              uint64_t seed, uint64_t draws) {
    const SeqId id = request.id;
    if (scheduler_ == nullptr) return failed_precondition("executor: add_prefilled() needs a scheduler");
    SamplingParams continued = sampling;
    continued.seed = seed;
    auto sampler = std::make_unique<SequenceSampler>(continued, request.prompt);
    sampler->skip_draws(draws);
    sampler->observe(first_token);
    MOE_ASSIGN_OR_RETURN(ReceivePlan plan, scheduler_->add_prefilled(std::move(request), first_token));
    seqs_[id] = Seq{.sampler = std::move(sampler), .options = {}, .handed_off = false};
    return plan;
}

bool Executor::receive_done(SeqId id) {
    return scheduler_ != nullptr && scheduler_->receive_done(id);
}

bool Executor::finish(SeqId id) {
    seqs_.erase(id);
    return scheduler_ != nullptr && scheduler_->finish(id);
}

const SequenceSampler* Executor::sampler(SeqId id) const {
    auto it = seqs_.find(id);
    return it == seqs_.end() ? nullptr : it->second.sampler.get();
}

void Executor::set_faults_for_testing(ExecutorFaults faults) {
    if (!faults.before_forward && !faults.before_sample)
        faults_.reset();
    else
        faults_ = std::make_unique<ExecutorFaults>(std::move(faults));
}

std::vector<SeqResult> Executor::run(std::span<const ExecSeq> seqs, StepTimes* times) {
    std::vector<SeqResult> results(seqs.size());
    for (size_t i = 0; i < seqs.size(); ++i) results[i].id = seqs[i].id;
    if (seqs.empty()) {
        // An empty local batch: nothing to compute here, but a rank of an expert-parallel group
        // still joins the step's collectives (its experts serve the other ranks' rows). Its
        // failure has no sequence to fail: the model keeps it (expert_parallel_status()).
        if (in_group()) {
            auto t0 = Clock::now();
            (void)model_.forward(BatchView{}, cache_);
            if (times) times->forward_s += seconds_since(t0);
        }
        return results;
    }
    auto fail_all = [&](const std::string& message) {
        for (size_t i = 0; i < seqs.size(); ++i) results[i] = failed(seqs[i].id, message);
        return results;
    };

    BatchView batch;
    batch.sequences.reserve(seqs.size());
    for (const ExecSeq& s : seqs)
        batch.sequences.push_back(
            {.token_ids = s.token_ids, .num_cached = s.num_cached, .block_table = s.block_table, .all_logits = false});

    auto t0 = Clock::now();
    Status injected = faults_ && faults_->before_forward ? faults_->before_forward() : ok_status();
    if (!injected.ok()) return fail_all("model forward failed: " + injected.to_string());
    StatusOr<ForwardOutput> out = model_.forward(batch, cache_);
    if (times) times->forward_s += seconds_since(t0);
    if (!out.ok()) return fail_all("model forward failed: " + out.status().to_string());
    // NOTE: the model promises one row per sequence (all_logits is off); checked, not trusted,
    // because a wrong row count would make every sampler read past the logits.
    if (out->vocab_size <= 0 || out->row_start.size() != seqs.size() + 1 ||
        out->logits.size() != static_cast<size_t>(out->row_start.back() * out->vocab_size))
        return fail_all("model forward returned " + std::to_string(out->row_start.size()) +
                        " row offsets and vocab_size " + std::to_string(out->vocab_size) + " for " +
                        std::to_string(seqs.size()) + " sequences");

    t0 = Clock::now();
    for (size_t i = 0; i < seqs.size(); ++i) {
        const ExecSeq& s = seqs[i];
        SeqResult& r = results[i];
        if (s.sampler == nullptr) {
            r.outcome = SeqOutcome::kPrefilling;
            continue;
        }
        if (faults_ && faults_->before_sample) {
            Status fault = faults_->before_sample(s.id, *s.sampler);
            if (!fault.ok()) {
                r = failed(s.id, "sampling failed: " + fault.to_string());
                continue;
            }
        }
        r.outcome = SeqOutcome::kSampled;
        r.sample = s.sampler->sample(out->last_row(i), out->vocab_size);
    }
    if (times) times->sample_s += seconds_since(t0);
    return results;
}

StepResult Executor::step() {
    StepResult result;
    if (scheduler_ == nullptr) return result;
    auto t0 = Clock::now();
    StepPlan plan = scheduler_->schedule();
    result.times.schedule_s = seconds_since(t0);
    result.preempted = plan.preempted;
    result.num_tokens = plan.num_tokens;
    if (plan.empty()) {
        // An empty local batch is a legal step (in a group it still runs the empty forward).
        if (in_group()) {
            run({}, &result.times);
            result.ran_forward = true;
        }
        return result;
    }

    // ---- plan -> explicit batch; sequences that must not run fail here, alone
    result.seqs.resize(plan.seqs.size());
    batch_.clear();
    batch_pos_.clear();
    for (size_t i = 0; i < plan.seqs.size(); ++i) {
        const ScheduledSeq& s = plan.seqs[i];
        result.seqs[i].id = s.id;
        const SequenceState* st = scheduler_->get(s.id);
        auto it = seqs_.find(s.id);
        if (st == nullptr || it == seqs_.end()) {
            result.seqs[i] = failed(s.id, "sequence " + std::to_string(s.id) + " was planned but never added");
            continue;
        }
        if (it->second.handed_off) {
            result.seqs[i] = failed(s.id, "sequence " + std::to_string(s.id) +
                                              " was handed off and planned again (finish() it after the handoff)");
            continue;
        }
        batch_.push_back(
            {.id = s.id,
             .token_ids = std::span<const int32_t>(st->tokens.data() + s.start, static_cast<size_t>(s.num_tokens)),
             .num_cached = s.start,
             .block_table = scheduler_->kv().block_table(s.id),
             .sampler = s.samples ? it->second.sampler.get() : nullptr});
        batch_pos_.push_back(i);
    }

    std::vector<SeqResult> ran = run(batch_, &result.times);
    result.ran_forward = !batch_.empty() || in_group();

    // ---- results back in plan order; the plan of what actually happened for the scheduler
    StepPlan done;
    done.seqs.reserve(batch_.size());
    std::vector<int32_t> sampled;
    sampled.reserve(batch_.size());
    for (size_t b = 0; b < ran.size(); ++b) {
        const size_t i = batch_pos_[b];
        SeqResult& r = result.seqs[i] = std::move(ran[b]);
        if (r.outcome == SeqOutcome::kFailed) continue;  // not advanced: the caller finishes it
        Seq& seq = seqs_.at(r.id);
        if (r.outcome == SeqOutcome::kSampled && seq.options.handoff_after_prefill) {
            // The first sampled token ends the prefill (a sequence never samples before its
            // prompt is computed): hand it off instead of decoding it here.
            r.outcome = SeqOutcome::kHandedOff;
            seq.handed_off = true;
        }
        done.seqs.push_back(plan.seqs[i]);
        sampled.push_back(r.outcome == SeqOutcome::kPrefilling ? -1 : r.sample.token);
    }
    t0 = Clock::now();
    scheduler_->on_step_done(done, sampled);
    // After on_step_done (the first token appended, the prompt's blocks committed): out of the
    // running list, blocks kept, until the caller finish()es it.
    for (const SeqResult& r : result.seqs)
        if (r.outcome == SeqOutcome::kHandedOff) scheduler_->hold_for_handoff(r.id);
    result.times.update_s = seconds_since(t0);
    return result;
}

}  // namespace moe
