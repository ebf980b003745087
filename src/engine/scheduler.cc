#include "engine/scheduler.h"

#include <algorithm>

#include "moe/check.h"

namespace moe {

Scheduler::Scheduler(const SchedulerOptions& options, KvBlockManager& kv) : options_(options), kv_(kv) {
    MOE_CHECK_GT(options_.max_batched_tokens, 0);
    MOE_CHECK_GT(options_.max_seqs, 0);
}

Status Scheduler::check_new(const NewRequest& r) const {
    const int64_t n = static_cast<int64_t>(r.prompt.size());
    if (n == 0) return invalid_argument("prompt: empty");
    if (r.max_tokens < 1) return invalid_argument("max_tokens must be >= 1, got " + std::to_string(r.max_tokens));
    // NOTE: compared without adding, so a huge max_tokens cannot overflow.
    if (r.max_tokens > options_.max_model_len - n)
        return invalid_argument("prompt (" + std::to_string(n) + " tokens) + max_tokens (" +
                                std::to_string(r.max_tokens) + ") exceeds max_model_len " +
                                std::to_string(options_.max_model_len));
    if (kv_.blocks_for(n + r.max_tokens) > kv_.num_total_blocks())
        return invalid_argument("prompt + max_tokens needs " + std::to_string(kv_.blocks_for(n + r.max_tokens)) +
                                " KV blocks, the whole cache holds " + std::to_string(kv_.num_total_blocks()));
    return ok_status();
}

Status Scheduler::add(NewRequest r) {
    MOE_RETURN_IF_ERROR(check_new(r));
    if (static_cast<int64_t>(waiting_.size()) >= options_.max_waiting)
        return resource_exhausted("waiting queue full (" + std::to_string(options_.max_waiting) + " requests)");
    if (seqs_.count(r.id)) return invalid_argument("sequence id " + std::to_string(r.id) + " already exists");
    const int64_t n = static_cast<int64_t>(r.prompt.size());
    SequenceState st;
    st.id = r.id;
    st.tokens = std::move(r.prompt);
    st.num_prompt = n;
    st.max_tokens = r.max_tokens;
    st.cache_salt = std::move(r.cache_salt);
    seqs_.emplace(r.id, std::move(st));
    waiting_.push_back(r.id);
    return ok_status();
}

void Scheduler::preempt(SeqId id, StepPlan& plan, int64_t& budget) {
    SequenceState& st = seqs_.at(id);
    // A victim scheduled earlier in this step (a decode, when a running prefill chunk needs the
    // block) leaves the plan and gives its tokens back to the budget.
    auto in_plan = std::find_if(plan.seqs.begin(), plan.seqs.end(), [&](const ScheduledSeq& s) { return s.id == id; });
    if (in_plan != plan.seqs.end()) {
        budget += in_plan->num_tokens;
        plan.seqs.erase(in_plan);
    }
    kv_.free(id);
    st.num_computed = 0;
    st.phase = SeqPhase::kWaiting;
    ++st.num_preemptions;
    running_.erase(std::remove(running_.begin(), running_.end(), id), running_.end());
    waiting_.push_front(id);
    plan.preempted.push_back(id);
}

bool Scheduler::grow_or_preempt(SeqId id, int64_t num_tokens, StepPlan& plan, int64_t& budget) {
    while (!kv_.allocate(id, num_tokens)) {
        MOE_CHECK(!running_.empty());
        const SeqId victim = running_.back();
        preempt(victim, plan, budget);
        if (victim == id) return false;
    }
    return true;
}

StepPlan Scheduler::schedule() {
    StepPlan plan;
    int64_t budget = options_.max_batched_tokens;
    auto chunk = [&](int64_t remaining) {
        int64_t n = std::min(remaining, budget);
        if (options_.long_prefill_chunk > 0) n = std::min(n, options_.long_prefill_chunk);
        return n;
    };
    auto full = [&] { return budget <= 0 || static_cast<int64_t>(plan.seqs.size()) >= options_.max_seqs; };
    auto add_to_plan = [&](const SequenceState& st, int64_t n) {
        plan.seqs.push_back({.id = st.id,
                             .start = st.num_computed,
                             .num_tokens = n,
                             .samples = st.num_computed + n == static_cast<int64_t>(st.tokens.size())});
        budget -= n;
    };
    auto remaining = [](const SequenceState& st) { return static_cast<int64_t>(st.tokens.size()) - st.num_computed; };

    // ---- 1. running decodes (one token each), oldest first: running streams never starve
    // behind prefill chunks. NOTE: victims are taken from the back of running_, so indices
    // before i stay valid; when seq i is itself the newest left, everything newer is gone.
    for (size_t i = 0; i < running_.size() && !full(); ++i) {
        SequenceState& st = seqs_.at(running_[i]);
        if (remaining(st) != 1) continue;
        if (!grow_or_preempt(st.id, st.num_computed + 1, plan, budget)) break;
        add_to_plan(st, 1);
    }

    // ---- 2. running sequences still in (chunked) prefill, oldest first
    for (size_t i = 0; i < running_.size() && !full(); ++i) {
        SequenceState& st = seqs_.at(running_[i]);
        if (remaining(st) <= 1) continue;  // a decode: pass 1 scheduled it (or preempted it)
        const int64_t n = chunk(remaining(st));
        if (!grow_or_preempt(st.id, st.num_computed + n, plan, budget)) break;
        add_to_plan(st, n);
    }

    // ---- 3. waiting sequences, first come first served; none in a step that preempted (the
    // blocks just freed belong to the running ones that needed them).
    while (plan.preempted.empty() && !waiting_.empty() && !full() &&
           static_cast<int64_t>(running_.size()) < options_.max_seqs) {
        const SeqId id = waiting_.front();
        SequenceState& st = seqs_.at(id);
        const int64_t cached = kv_.attach_prefix(id, st.tokens, st.cache_salt);
        st.num_computed = cached;
        const int64_t n = chunk(remaining(st));
        if (!kv_.allocate(id, st.num_computed + n)) {
            kv_.free(id);  // give the attached prefix back; FCFS: nobody overtakes it
            st.num_computed = 0;
            break;
        }
        if (!st.admitted_once) {
            st.admitted_once = true;
            st.num_cached_prompt = std::min(cached, st.num_prompt);
        }
        waiting_.pop_front();
        running_.push_back(id);
        st.phase = SeqPhase::kRunning;
        add_to_plan(st, n);
    }
    plan.num_tokens = options_.max_batched_tokens - budget;
    return plan;
}

void Scheduler::on_step_done(const StepPlan& plan, std::span<const int32_t> sampled) {
    for (size_t i = 0; i < plan.seqs.size(); ++i) {
        const ScheduledSeq& s = plan.seqs[i];
        auto it = seqs_.find(s.id);
        if (it == seqs_.end()) continue;
        SequenceState& st = it->second;
        st.num_computed = s.start + s.num_tokens;
        if (s.samples) {
            MOE_CHECK_LT(i, sampled.size());  // sampled is parallel to plan.seqs
            st.tokens.push_back(sampled[i]);
        }
        kv_.commit(s.id, st.tokens, st.num_computed, st.cache_salt);
    }
}

bool Scheduler::finish(SeqId id) {
    auto it = seqs_.find(id);
    if (it == seqs_.end()) return false;
    if (it->second.phase == SeqPhase::kHandoff) --num_handoff_;
    if (it->second.phase == SeqPhase::kReceiving) --num_receiving_;
    kv_.free(id);
    waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), id), waiting_.end());
    running_.erase(std::remove(running_.begin(), running_.end(), id), running_.end());
    seqs_.erase(it);
    return true;
}

bool Scheduler::hold_for_handoff(SeqId id) {
    auto it = seqs_.find(id);
    if (it == seqs_.end() || it->second.phase != SeqPhase::kRunning) return false;
    running_.erase(std::remove(running_.begin(), running_.end(), id), running_.end());
    it->second.phase = SeqPhase::kHandoff;
    ++num_handoff_;
    return true;
}

StatusOr<ReceivePlan> Scheduler::add_prefilled(NewRequest r, int32_t first_token) {
    MOE_RETURN_IF_ERROR(check_new(r));
    if (seqs_.count(r.id)) return invalid_argument("sequence id " + std::to_string(r.id) + " already exists");
    SequenceState st;
    st.id = r.id;
    st.num_prompt = static_cast<int64_t>(r.prompt.size());
    st.tokens = std::move(r.prompt);
    st.tokens.push_back(first_token);
    st.max_tokens = r.max_tokens;
    st.cache_salt = std::move(r.cache_salt);
    // NOTE: attach over prompt + first token: every full block of the prompt may hit (the
    // prompt's KV is complete on the prefill side), never the first token's own position.
    const int64_t cached = kv_.attach_prefix(st.id, st.tokens, st.cache_salt);
    if (!kv_.allocate(st.id, st.num_prompt)) {
        kv_.free(st.id);
        return resource_exhausted(
            "decode worker: " + std::to_string(kv_.blocks_for(st.num_prompt) - cached / kv_.block_size()) +
            " KV blocks needed for the prefilled prompt, " + std::to_string(kv_.num_free_blocks()) + " free");
    }
    ReceivePlan plan;
    plan.num_cached_tokens = cached;
    plan.num_cached_blocks = cached / kv_.block_size();
    const auto table = kv_.block_table(st.id);
    plan.table.assign(table.begin(), table.end());
    st.num_computed = 0;
    st.num_cached_prompt = std::min(cached, st.num_prompt);
    st.admitted_once = true;
    st.phase = SeqPhase::kReceiving;
    ++num_receiving_;
    seqs_.emplace(st.id, std::move(st));
    return plan;
}

bool Scheduler::receive_done(SeqId id) {
    auto it = seqs_.find(id);
    if (it == seqs_.end() || it->second.phase != SeqPhase::kReceiving) return false;
    SequenceState& st = it->second;
    --num_receiving_;
    st.num_computed = st.num_prompt;
    kv_.commit(id, st.tokens, st.num_computed, st.cache_salt);
    st.phase = SeqPhase::kRunning;
    running_.push_back(id);
    return true;
}

const SequenceState* Scheduler::get(SeqId id) const {
    auto it = seqs_.find(id);
    return it == seqs_.end() ? nullptr : &it->second;
}

}  // namespace moe
