#include "engine/engine.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "core/log_field.h"
#include "core/logging.h"
#include "engine/engine_metrics.h"
#include "engine/group_lockstep.h"
#include "moe/check.h"

namespace moe {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kMaxHandoffIdBytes = 128;
constexpr std::chrono::milliseconds kMaxHandoffLease = std::chrono::hours(1);

double seconds(Clock::duration d) {
    return std::chrono::duration<double>(d).count();
}

// The key of a request in live_ids / seq_of / cancels: the namespace, length-prefixed so that
// no (namespace, id) pair can spell another's key.
std::string request_key(const std::string& id_namespace, const std::string& request_id) {
    return std::to_string(id_namespace.size()) + ":" + id_namespace + request_id;
}

}  // namespace

// One request the engine thread is working on.
struct Active {
    std::string request_id;  // the namespaced key (request_key), not the id the submitter sees
    SeqId seq = 0;
    GenerateParams params;
    std::shared_ptr<RequestSink> sink;
    std::unique_ptr<StopChecker> stop;
    std::unique_ptr<IncrementalDetokenizer> detok;
    Clock::time_point submitted, first_scheduled, first_token, last_token;
    bool scheduled = false;
    int64_t generated = 0;
    DeltaEvent pending;  // tokens not yet sent (stream_interval)
    // Decode side of a handoff (submit_prefilled): the rest of PrefilledParams.
    std::unique_ptr<PrefilledParams> prefilled;
    bool release_posted = false;  // its one release job is queued
};

// Decode side: one pull (and its acknowledgement) on the import thread.
struct ImportJob {
    SeqId seq = 0;
    bool release_only = false;  // nothing to pull (or the request ended first): acknowledge only
    std::vector<int32_t> src_index, dst;
    std::function<Status(std::span<const int32_t>, std::span<const int32_t>, const std::atomic<bool>&)> pull;
    std::function<Status()> release;
    std::shared_ptr<std::atomic<bool>> cancelled;
};

struct ImportDone {
    SeqId seq = 0;
    Status status;
    double seconds = 0;      // the pull and the acknowledgement
    int64_t num_blocks = 0;  // pulled
};

struct Engine::Impl {
    std::unique_ptr<MoeTransformer> model;
    std::unique_ptr<Tokenizer> tokenizer;
    EngineOptions options;
    int64_t max_model_len = 0;
    std::optional<KvCache> cache;
    std::unique_ptr<KvBlockManager> kv;
    std::unique_ptr<Scheduler> scheduler;
    std::unique_ptr<Executor> executor;    // owns every running sequence's sampler
    std::unique_ptr<EngineMetrics> stats;  // recorded on the engine thread (engine_metrics.h)

    // ---- shared with other threads (guarded by mu)
    mutable std::mutex mu;
    std::condition_variable cv;       // wakes the engine thread
    std::condition_variable cv_idle;  // wakes wait_idle()
    std::deque<std::unique_ptr<Active>> inbox;
    std::vector<std::string> cancels;
    std::unordered_set<std::string> live_ids;  // submitted, final not yet sent
    bool stopping = false;
    bool draining = false;
    EngineLoad snapshot;  // refreshed by the engine thread after every step
    // NOTE: kept apart from snapshot so that the per-step copy reuses its capacity.
    std::vector<std::vector<int64_t>> expert_load;

    std::atomic<int64_t> num_preemptions{0};
    std::atomic<int64_t> steps{0};
    std::atomic<int64_t> generated_tokens{0};
    // Set once, by the engine thread, when an exception escaped the step loop; never cleared.
    std::atomic<bool> failed{false};

    // Disaggregation, shared (guarded by mu).
    std::unordered_set<std::string> live_handoffs;  // leases held (prefill side)
    std::vector<std::string> releases;              // release_handoff() requests not yet applied
    std::vector<ImportDone> imports_done;           // finished pulls (decode side)

    // ---- the import thread (decode side): runs pulls and acknowledgements, never the model
    std::thread import_thread;
    std::mutex import_mu;
    std::condition_variable import_cv;
    std::deque<ImportJob> import_queue;
    bool import_stop = false;

    // ---- engine thread only
    struct Lease {
        SeqId seq = 0;
        Clock::time_point expiry;
    };
    std::unordered_map<std::string, Lease> leases;  // prefill side, by handoff id
    std::deque<SeqId> awaiting_room;                // decode side: admitted, no blocks yet
    // decode side: pulls posted whose completion the engine thread has not seen; the flag is the
    // job's cancel signal. A sequence in here keeps its blocks even when its request ended.
    std::unordered_map<SeqId, std::shared_ptr<std::atomic<bool>>> importing;
    std::thread thread;
    std::unordered_map<SeqId, std::unique_ptr<Active>> active;
    std::unordered_map<std::string, SeqId> seq_of;
    SeqId next_seq = 1;

    void run();    // the engine thread's entry: serve(), and the catch-all around it
    void serve();  // the step loop, until stop()
    // After an exception escaped serve(): every request in flight ends with INTERNAL, the engine
    // is marked failed, and requests that still arrive end the same way until stop().
    void fail_everything(const std::string& why, StatusCode code = StatusCode::kInternal);
    // Ends a request without touching the scheduler or the executor (whose state an exception
    // may have left half-updated): one on_final with kError, sink exceptions swallowed.
    void abandon(Active& a, const Status& error);
    void admit(std::unique_ptr<Active> a);
    Status check_params(GenerateParams& p) const;  // submit()'s checks; fills the id and the EOS ids
    StatusOr<std::string> enqueue(std::unique_ptr<Active> a);
    // ---- disaggregation, engine thread
    void admit_prefilled(std::unique_ptr<Active> a);
    void try_receive(SeqId seq);  // allocate the prefilled sequence's blocks and post its pull
    void post_import(ImportJob job);
    void apply_imports_and_leases();
    void end_lease(const std::string& handoff_id, const char* why);
    void hand_off(Active& a, const SampleResult& r);
    void note_token(Active& a);  // timing and counters of a generated token
    void import_loop();          // the import thread
    void finalize(SeqId seq, FinishReason reason, Status error = {}, const std::string& matched = {},
                  std::optional<int32_t> matched_token = std::nullopt);
    void flush_delta(Active& a);
    void on_token(Active& a, const SampleResult& r);
    void on_result(const SeqResult& r);
    bool step();  // false when nothing could be scheduled
    void refresh_snapshot();
};

// ---- creation ----------------------------------------------------------------------------------

StatusOr<DType> kv_cache_dtype_from_name(std::string_view name, DType matrix_dtype) {
    if (name == "auto") return matrix_dtype == DType::kBF16 ? DType::kBF16 : DType::kF32;
    if (name == "f32") return DType::kF32;
    if (name == "bf16") return DType::kBF16;
    return invalid_argument("--kv-cache-dtype must be auto, f32 or bf16, got \"" + std::string(name) + "\"");
}

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Engine::~Engine() {
    stop();
}

StatusOr<std::unique_ptr<Engine>> Engine::create(std::unique_ptr<MoeTransformer> model,
                                                 std::unique_ptr<Tokenizer> tokenizer, const EngineOptions& options) {
    if (!model) return invalid_argument("engine: no model");
    auto impl = std::make_unique<Impl>();
    const ModelConfig& c = model->config();
    impl->options = options;
    if (options.kv_block_size < 1 || options.kv_block_size > 1024)
        return invalid_argument("kv_block_size must be in [1, 1024], got " + std::to_string(options.kv_block_size));
    if (options.max_pending < 1) return invalid_argument("max_pending must be >= 1");
    if (options.limits.max_request_id_bytes < kAssignedRequestIdBytes)
        return invalid_argument("limits.max_request_id_bytes must be >= " + std::to_string(kAssignedRequestIdBytes) +
                                " (an assigned id's length), got " +
                                std::to_string(options.limits.max_request_id_bytes));
    int64_t max_len = c.max_position_embeddings > 0 ? c.max_position_embeddings : 4096;
    if (options.scheduler.max_model_len > 0) max_len = std::min(max_len, options.scheduler.max_model_len);
    impl->max_model_len = max_len;
    if (!impl->options.metrics) impl->options.metrics = std::make_shared<metrics::Registry>();
    impl->stats = std::make_unique<EngineMetrics>(*impl->options.metrics, options.metrics_model_name, max_len);

    const int64_t per_block = KvCache::bytes_per_block(c, options.kv_block_size, options.kv_dtype);
    int64_t budget = options.kv_cache_bytes;
    if (budget <= 0) {
        if (!(options.kv_cache_fraction > 0 && options.kv_cache_fraction <= 0.95))
            return invalid_argument("kv_cache_fraction must be in (0, 0.95]");
        // The memory of the device that holds the cache (host memory within the cgroup's limit on
        // the CPU, the GPU's on CUDA), after the weights were loaded there.
        StatusOr<MemoryInfo> memory = model->backend().memory_info();
        if (!memory.ok())
            return memory.status().with_context(
                "sizing the kv cache from kv_cache_fraction (give kv_cache_bytes instead)");
        budget = static_cast<int64_t>(static_cast<double>(memory->available_bytes) * options.kv_cache_fraction);
        // Never more than the blocks max_pending full-length requests could use.
        const int64_t useful = per_block * ((max_len + options.kv_block_size - 1) / options.kv_block_size) *
                               std::min<int64_t>(options.max_pending, options.scheduler.max_seqs);
        budget = std::min(budget, useful);
    }
    const int64_t num_blocks = budget / per_block;
    if (num_blocks < 1)
        return invalid_argument("kv cache budget of " + std::to_string(budget) + " bytes holds no block (" +
                                std::to_string(per_block) + " bytes per block of " +
                                std::to_string(options.kv_block_size) + " tokens)");
    MOE_ASSIGN_OR_RETURN(
        KvCache cache,
        KvCache::create(model->backend(), c,
                        {.num_blocks = num_blocks, .block_size = options.kv_block_size, .dtype = options.kv_dtype}));
    impl->cache.emplace(std::move(cache));
    impl->kv = std::make_unique<KvBlockManager>(KvBlockManagerOptions{
        .num_blocks = num_blocks, .block_size = options.kv_block_size, .prefix_caching = options.prefix_caching});
    if (options.kv_events) impl->kv->set_record_events(true);
    SchedulerOptions so = options.scheduler;
    so.max_model_len = max_len;
    so.max_waiting = std::max<int64_t>(so.max_waiting, options.max_pending);
    impl->scheduler = std::make_unique<Scheduler>(so, *impl->kv);
    impl->model = std::move(model);
    impl->executor = std::make_unique<Executor>(*impl->model, *impl->cache, *impl->scheduler);
    impl->tokenizer = std::move(tokenizer);
    log::engine().info(
        "kv cache: {} blocks of {} tokens ({:.1f} MiB, {}), max_model_len {}, max_batched_tokens {}, "
        "max_seqs {}, prefix caching {}",
        num_blocks, options.kv_block_size, static_cast<double>(num_blocks * per_block) / (1 << 20),
        dtype_name(options.kv_dtype), max_len, so.max_batched_tokens, so.max_seqs,
        options.prefix_caching ? "on" : "off");
    impl->refresh_snapshot();
    return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

Status Engine::start() {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (impl_->thread.joinable()) return failed_precondition("engine already started");
    impl_->stopping = false;
    {
        std::lock_guard<std::mutex> import_lock(impl_->import_mu);
        impl_->import_stop = false;
    }
    impl_->import_thread = std::thread([impl = impl_.get()] { impl->import_loop(); });
    impl_->thread = std::thread([impl = impl_.get()] { impl->run(); });
    return ok_status();
}

void Engine::stop() {
    if (!impl_) return;
    {
        std::lock_guard<std::mutex> lock(impl_->mu);
        impl_->stopping = true;
    }
    impl_->cv.notify_all();
    if (impl_->thread.joinable()) impl_->thread.join();
    if (impl_->options.kv_events) impl_->options.kv_events->close();
    // Whatever is left ends cancelled (the engine thread is gone, so this thread owns the state).
    std::deque<std::unique_ptr<Active>> inbox;
    {
        std::lock_guard<std::mutex> lock(impl_->mu);
        inbox.swap(impl_->inbox);
    }
    if (impl_->failed.load()) {
        for (auto& a : inbox) impl_->abandon(*a, internal_error("the engine failed; request not run"));
        {
            std::lock_guard<std::mutex> lock(impl_->import_mu);
            impl_->import_stop = true;
        }
        impl_->import_cv.notify_all();
        if (impl_->import_thread.joinable()) impl_->import_thread.join();
        return;
    }
    for (auto& a : inbox) impl_->admit(std::move(a));
    std::vector<SeqId> left;
    for (auto& [seq, a] : impl_->active) left.push_back(seq);
    for (SeqId s : left) impl_->finalize(s, FinishReason::kCancelled);
    // The pulls still running were cancelled by finalize; the thread acknowledges what is queued
    // and stops. It writes into the cache, so it ends before the engine does.
    {
        std::lock_guard<std::mutex> lock(impl_->import_mu);
        impl_->import_stop = true;
    }
    impl_->import_cv.notify_all();
    if (impl_->import_thread.joinable()) impl_->import_thread.join();
}

// ---- submission (any thread) -------------------------------------------------------------------

Status Engine::Impl::check_params(GenerateParams& p) const {
    const Impl& m = *this;
    const ModelConfig& c = m.model->config();
    const RequestLimits& lim = m.options.limits;
    if (p.request_id.size() > lim.max_request_id_bytes)
        return invalid_argument("request_id is " + std::to_string(p.request_id.size()) + " bytes, the limit is " +
                                std::to_string(lim.max_request_id_bytes));
    if (p.id_namespace.size() > lim.max_id_namespace_bytes)
        return invalid_argument("id_namespace is " + std::to_string(p.id_namespace.size()) + " bytes, the limit is " +
                                std::to_string(lim.max_id_namespace_bytes));
    if (p.cache_salt.size() > lim.max_cache_salt_bytes)
        return invalid_argument("cache_salt is " + std::to_string(p.cache_salt.size()) + " bytes, the limit is " +
                                std::to_string(lim.max_cache_salt_bytes));
    if (p.prompt_ids.empty()) return invalid_argument("prompt: empty (at least 1 token is needed)");
    for (size_t i = 0; i < p.prompt_ids.size(); ++i)
        if (p.prompt_ids[i] < 0 || p.prompt_ids[i] >= c.vocab_size)
            return invalid_argument("prompt token id " + std::to_string(p.prompt_ids[i]) + " at index " +
                                    std::to_string(i) + " is outside the vocabulary [0, " +
                                    std::to_string(c.vocab_size) + ")");
    const int64_t n_prompt = static_cast<int64_t>(p.prompt_ids.size());
    if (n_prompt >= m.max_model_len)
        return invalid_argument("prompt: " + std::to_string(n_prompt) + " tokens, the context length is " +
                                std::to_string(m.max_model_len) + " (prompt + max_tokens must fit)");
    MOE_RETURN_IF_ERROR(validate(p.sampling));
    if (p.sampling.logprobs > lim.max_logprobs)
        return invalid_argument("logprobs must be in [0, " + std::to_string(lim.max_logprobs) + "], got " +
                                std::to_string(p.sampling.logprobs));
    MOE_RETURN_IF_ERROR(validate(p.stopping, m.max_model_len));
    if (n_prompt + p.stopping.max_tokens > m.max_model_len)
        return invalid_argument("max_tokens: prompt (" + std::to_string(n_prompt) + " tokens) + max_tokens (" +
                                std::to_string(p.stopping.max_tokens) + ") exceeds the context length " +
                                std::to_string(m.max_model_len));
    // A prefill-only request holds its prompt and first token here, not its whole output.
    const int64_t need_blocks = m.kv->blocks_for(n_prompt + (p.handoff ? 1 : p.stopping.max_tokens));
    if (need_blocks > m.kv->num_total_blocks())
        return invalid_argument("prompt + max_tokens needs " + std::to_string(need_blocks) +
                                " KV blocks, the whole cache holds " + std::to_string(m.kv->num_total_blocks()));
    if (p.stream_interval < 1 || p.stream_interval > lim.max_stream_interval)
        return invalid_argument("stream_interval must be in [1, " + std::to_string(lim.max_stream_interval) +
                                "], got " + std::to_string(p.stream_interval));
    if (p.handoff) {
        if (p.handoff->handoff_id.empty() || p.handoff->handoff_id.size() > kMaxHandoffIdBytes)
            return invalid_argument("handoff_id must be 1 to " + std::to_string(kMaxHandoffIdBytes) + " bytes, got " +
                                    std::to_string(p.handoff->handoff_id.size()));
        if (p.handoff->lease <= std::chrono::milliseconds(0) || p.handoff->lease > kMaxHandoffLease)
            return invalid_argument("handoff lease must be in (0, " + std::to_string(kMaxHandoffLease.count() / 1000) +
                                    "] seconds, got " + std::to_string(p.handoff->lease.count()) + " ms");
    }
    if (p.request_id.empty()) {
        MOE_ASSIGN_OR_RETURN(p.request_id, new_request_id());
    }
    // EOS ids: the model's (config.json + generation_config.json), else the tokenizer's.
    p.stopping.eos_token_ids.assign(c.eos_token_ids.begin(), c.eos_token_ids.end());
    if (p.stopping.eos_token_ids.empty() && m.tokenizer && m.tokenizer->eos_id())
        p.stopping.eos_token_ids.push_back(*m.tokenizer->eos_id());
    return ok_status();
}

StatusOr<std::string> Engine::Impl::enqueue(std::unique_ptr<Active> a) {
    Impl& m = *this;
    const std::string id = a->params.request_id;
    const std::string key = request_key(a->params.id_namespace, a->params.request_id);
    {
        std::lock_guard<std::mutex> lock(m.mu);
        if (m.failed.load()) return unavailable("the engine has failed: not accepting requests");
        if (m.draining || m.stopping) return unavailable("server is draining: not accepting new requests");
        if (static_cast<int64_t>(m.live_ids.size()) >= m.options.max_pending)
            return resource_exhausted("queue full: " + std::to_string(m.live_ids.size()) +
                                      " requests pending (max_pending " + std::to_string(m.options.max_pending) + ")");
        // NOTE: the id is not echoed: the message goes back to the client, and may be logged.
        if (m.live_ids.count(key)) return invalid_argument("request_id is already in use by a pending request");
        if (a->params.handoff && m.live_handoffs.count(a->params.handoff->handoff_id))
            return invalid_argument("handoff_id is already leased");
        m.live_ids.insert(key);
        a->request_id = key;
        m.inbox.push_back(std::move(a));
    }
    m.cv.notify_all();
    return id;
}

StatusOr<std::string> Engine::submit(GenerateParams p, std::shared_ptr<RequestSink> sink) {
    if (!sink) return invalid_argument("submit: no sink");
    MOE_RETURN_IF_ERROR(impl_->check_params(p));
    auto a = std::make_unique<Active>();
    a->submitted = Clock::now();
    a->sink = std::move(sink);
    a->params = std::move(p);
    return impl_->enqueue(std::move(a));
}

StatusOr<std::string> Engine::submit_prefilled(PrefilledParams pp, std::shared_ptr<RequestSink> sink) {
    if (!sink) return invalid_argument("submit_prefilled: no sink");
    if (pp.params.handoff) return invalid_argument("a prefilled request cannot be handed off again");
    if (!pp.pull || !pp.release) return invalid_argument("submit_prefilled: pull and release are required");
    MOE_RETURN_IF_ERROR(impl_->check_params(pp.params));
    const ModelConfig& c = impl_->model->config();
    const int64_t n_prompt = static_cast<int64_t>(pp.params.prompt_ids.size());
    if (pp.first_token.token < 0 || pp.first_token.token >= c.vocab_size)
        return invalid_argument("first_token " + std::to_string(pp.first_token.token) +
                                " is outside the vocabulary [0, " + std::to_string(c.vocab_size) + ")");
    if (pp.random_draws > static_cast<uint64_t>(impl_->max_model_len))
        return invalid_argument("random_draws " + std::to_string(pp.random_draws) + " exceeds the context length " +
                                std::to_string(impl_->max_model_len));
    if (pp.num_source_blocks != impl_->kv->blocks_for(n_prompt))
        return invalid_argument("the prefill side sent " + std::to_string(pp.num_source_blocks) +
                                " KV blocks for a prompt of " + std::to_string(n_prompt) + " tokens, which takes " +
                                std::to_string(impl_->kv->blocks_for(n_prompt)) + " blocks of " +
                                std::to_string(impl_->kv->block_size()) + " tokens");
    if (pp.cached_prompt_tokens < 0 || pp.cached_prompt_tokens > n_prompt)
        return invalid_argument("cached_prompt_tokens " + std::to_string(pp.cached_prompt_tokens) +
                                " is outside [0, prompt length " + std::to_string(n_prompt) + "]");
    if (!(pp.queue_seconds >= 0 && pp.queue_seconds < 1e9) || !(pp.ttft_seconds >= 0 && pp.ttft_seconds < 1e9))
        return invalid_argument("queue_seconds and ttft_seconds must be in [0, 1e9)");
    if (static_cast<int32_t>(pp.first_token.top.size()) > impl_->options.limits.max_logprobs)
        return invalid_argument("first_token: " + std::to_string(pp.first_token.top.size()) +
                                " top logprobs, the limit is " + std::to_string(impl_->options.limits.max_logprobs));
    for (const TokenLogprob& t : pp.first_token.top)
        if (t.token < 0 || t.token >= c.vocab_size)
            return invalid_argument("first_token.top: token " + std::to_string(t.token) + " is outside the vocabulary");
    auto a = std::make_unique<Active>();
    a->submitted = Clock::now();
    a->sink = std::move(sink);
    a->params = std::move(pp.params);
    a->prefilled = std::make_unique<PrefilledParams>(std::move(pp));
    return impl_->enqueue(std::move(a));
}

bool Engine::release_handoff(const std::string& handoff_id) {
    {
        std::lock_guard<std::mutex> lock(impl_->mu);
        if (!impl_->live_handoffs.count(handoff_id)) return false;
        impl_->releases.push_back(handoff_id);
    }
    impl_->cv.notify_all();
    return true;
}

const KvCache& Engine::kv_cache() const {
    return *impl_->cache;
}

bool Engine::cancel(const std::string& request_id, const std::string& id_namespace) {
    const std::string key = request_key(id_namespace, request_id);
    {
        std::lock_guard<std::mutex> lock(impl_->mu);
        if (!impl_->live_ids.count(key)) return false;
        impl_->cancels.push_back(key);
    }
    impl_->cv.notify_all();
    return true;
}

void Engine::drain() {
    {
        std::lock_guard<std::mutex> lock(impl_->mu);
        impl_->draining = true;
        impl_->snapshot.draining = true;
    }
    impl_->cv.notify_all();
}

bool Engine::wait_idle(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(impl_->mu);
    return impl_->cv_idle.wait_for(lock, timeout, [&] { return impl_->live_ids.empty(); });
}

EngineLoad Engine::load() const {
    std::lock_guard<std::mutex> lock(impl_->mu);
    EngineLoad l = impl_->snapshot;
    l.expert_load = impl_->expert_load;
    l.pending = static_cast<int64_t>(impl_->live_ids.size());
    l.draining = impl_->draining;
    l.num_preemptions = impl_->num_preemptions.load();
    l.steps = impl_->steps.load();
    l.generated_tokens = impl_->generated_tokens.load();
    l.failed = impl_->failed.load();
    return l;
}

bool Engine::healthy() const {
    return !impl_->failed.load();
}

void Engine::set_executor_faults_for_testing(ExecutorFaults faults) {
    std::lock_guard<std::mutex> lock(impl_->mu);
    MOE_CHECK(!impl_->thread.joinable());  // test-only, before start(): the engine thread owns the executor
    impl_->executor->set_faults_for_testing(std::move(faults));
}

const ModelConfig& Engine::config() const {
    return impl_->model->config();
}
const Tokenizer* Engine::tokenizer() const {
    return impl_->tokenizer.get();
}
int64_t Engine::max_model_len() const {
    return impl_->max_model_len;
}
const EngineOptions& Engine::options() const {
    return impl_->options;
}
metrics::Registry& Engine::metrics() const {
    return *impl_->options.metrics;
}

// ---- the engine thread -------------------------------------------------------------------------

void Engine::Impl::refresh_snapshot() {
    EngineLoad l;
    l.waiting = static_cast<int64_t>(scheduler->num_waiting());
    l.running = static_cast<int64_t>(scheduler->num_running());
    l.kv_blocks_total = kv->num_total_blocks();
    l.kv_blocks_free = kv->num_free_blocks();
    l.kv_blocks_cached = kv->num_cached_blocks();
    l.kv_block_size = kv->block_size();
    l.handoffs = static_cast<int64_t>(leases.size());
    l.receiving = static_cast<int64_t>(scheduler->num_receiving() + awaiting_room.size());
    stats->on_load(l.running, l.waiting, l.kv_blocks_total, l.kv_blocks_free, l.kv_blocks_cached);
    if (options.kv_events)
        options.kv_events->publish(kv->take_events(), KvLoadInfo{.kv_blocks_total = l.kv_blocks_total,
                                                                 .kv_blocks_free = l.kv_blocks_free,
                                                                 .num_running = static_cast<int32_t>(l.running),
                                                                 .num_waiting = static_cast<int32_t>(l.waiting)});
    std::lock_guard<std::mutex> lock(mu);
    l.draining = draining;
    snapshot = l;
    if (!model->expert_load().empty()) expert_load = model->expert_load();
}

void Engine::Impl::admit(std::unique_ptr<Active> a) {
    if (a->prefilled) return admit_prefilled(std::move(a));
    const SeqId seq = next_seq++;
    a->seq = seq;
    a->stop = std::make_unique<StopChecker>(a->params.stopping);
    if (tokenizer)
        a->detok =
            std::make_unique<IncrementalDetokenizer>(*tokenizer, a->params.skip_special_tokens, a->params.prompt_ids);
    // A prefill-only request counts its prompt and first token against the cache, no more.
    const bool handoff = a->params.handoff.has_value();
    Status s = executor->add(NewRequest{.id = seq,
                                        .prompt = a->params.prompt_ids,
                                        .max_tokens = handoff ? 1 : a->params.stopping.max_tokens,
                                        .cache_salt = a->params.cache_salt},
                             a->params.sampling, {.handoff_after_prefill = handoff});
    seq_of[a->request_id] = seq;
    active[seq] = std::move(a);
    if (!s.ok()) finalize(seq, FinishReason::kError, s);
}

void Engine::Impl::flush_delta(Active& a) {
    if (a.pending.tokens.empty() && a.pending.text.empty()) return;
    DeltaEvent d = std::move(a.pending);
    a.pending = DeltaEvent{};
    a.sink->on_delta(std::move(d));
}

void Engine::Impl::finalize(SeqId seq, FinishReason reason, Status error, const std::string& matched,
                            std::optional<int32_t> matched_token) {
    auto it = active.find(seq);
    if (it == active.end()) return;
    Active& a = *it->second;
    const SequenceState* st = scheduler->get(seq);
    FinalEvent f;
    f.reason = reason;
    f.matched_stop = matched;
    f.matched_token = matched_token;
    f.prompt_tokens = static_cast<int64_t>(a.params.prompt_ids.size());
    f.completion_tokens = a.generated;
    f.cached_prompt_tokens = st ? st->num_cached_prompt : 0;
    const auto now = Clock::now();
    f.queue_seconds = a.scheduled ? seconds(a.first_scheduled - a.submitted) : seconds(now - a.submitted);
    f.ttft_seconds = a.generated > 0 ? seconds(a.first_token - a.submitted) : 0;
    f.mean_itl_seconds =
        a.generated > 1 ? seconds(a.last_token - a.first_token) / static_cast<double>(a.generated - 1) : 0;
    f.total_seconds = seconds(now - a.submitted);
    if (a.prefilled) {
        // The client's request began on the prefill worker: its queue, its first token.
        f.cached_prompt_tokens = a.prefilled->cached_prompt_tokens;
        f.queue_seconds = a.prefilled->queue_seconds;
        f.ttft_seconds = a.prefilled->ttft_seconds;
        f.total_seconds += a.prefilled->ttft_seconds;
    }
    stats->on_finish(reason, f.total_seconds, a.scheduled ? f.queue_seconds : -1, f.prompt_tokens, f.completion_tokens);
    f.error = std::move(error);
    // Held-back text (a partial stop-string match that never completed) goes out, unless a stop
    // string matched.
    if (reason != FinishReason::kStop || matched.empty()) {
        std::string tail = a.stop->flush();
        if (a.detok && reason != FinishReason::kError) {
            auto rest = a.detok->finish();
            if (rest.ok()) tail += *rest;
        }
        a.pending.text += tail;
    }
    flush_delta(a);
    a.sink->on_final(std::move(f));
    if (a.prefilled && !a.release_posted) {
        // Ended before its pull was posted (at the first token, waiting for room, cancelled):
        // the prefill side is still told, so its lease ends now rather than at expiry.
        a.release_posted = true;
        post_import(ImportJob{.seq = seq, .release_only = true, .release = a.prefilled->release});
        awaiting_room.erase(std::remove(awaiting_room.begin(), awaiting_room.end(), seq), awaiting_room.end());
    }
    if (auto imp = importing.find(seq); imp != importing.end()) {
        // A pull is writing into its blocks: they are freed when it returns (apply_imports_and_leases).
        imp->second->store(true);
    } else {
        executor->finish(seq);
    }
    const std::string id = a.request_id;
    seq_of.erase(id);
    active.erase(it);
    // NOTE: the snapshot must show the freed blocks before the request stops counting as
    // pending, so that a client who saw its stream end reads an idle pool from load().
    refresh_snapshot();
    {
        std::lock_guard<std::mutex> lock(mu);
        live_ids.erase(id);
        if (live_ids.empty()) cv_idle.notify_all();
    }
}

void Engine::Impl::note_token(Active& a) {
    const auto now = Clock::now();
    if (a.generated == 0) {
        a.first_token = now;
        const SequenceState* st = scheduler->get(a.seq);
        stats->on_first_token(seconds(now - a.submitted), static_cast<int64_t>(a.params.prompt_ids.size()),
                              st ? st->num_cached_prompt : 0);
    } else {
        stats->on_next_token(seconds(now - a.last_token));
    }
    stats->on_token();
    a.last_token = now;
    ++a.generated;
    generated_tokens.fetch_add(1, std::memory_order_relaxed);
}

void Engine::Impl::on_token(Active& a, const SampleResult& r) {
    note_token(a);
    std::string delta;
    if (a.detok) {
        auto d = a.detok->push(r.token);
        if (!d.ok()) {
            finalize(a.seq, FinishReason::kError, d.status());
            return;
        }
        delta = std::move(d).value();
    }
    StopUpdate u = a.stop->on_token(r.token, delta);
    TokenEvent ev{.token = r.token, .logprob = r.logprob, .top = {}};
    if (a.params.sampling.logprobs > 0) ev.top = r.top;
    a.pending.tokens.push_back(std::move(ev));
    a.pending.text += u.text;
    if (u.finish != FinishReason::kNone) {
        finalize(a.seq, u.finish, {}, u.matched, u.matched_token);
        return;
    }
    if (static_cast<int32_t>(a.pending.tokens.size()) >= a.params.stream_interval) flush_delta(a);
}

bool Engine::Impl::step() {
    const auto now = Clock::now();
    StepResult r = executor->step();
    // A failed expert-parallel group: the serve loop ends every request with UNAVAILABLE instead.
    if (!model->expert_parallel_status().ok()) return true;
    num_preemptions.fetch_add(static_cast<int64_t>(r.preempted.size()), std::memory_order_relaxed);
    if (!r.preempted.empty()) stats->on_preempted(static_cast<int64_t>(r.preempted.size()));
    if (r.empty()) return false;
    stats->on_step(seconds(Clock::now() - now), r.num_tokens);
    steps.fetch_add(1, std::memory_order_relaxed);
    for (const SeqResult& s : r.seqs) {
        auto it = active.find(s.id);
        if (it == active.end() || it->second->scheduled) continue;
        it->second->scheduled = true;
        it->second->first_scheduled = now;
    }
    for (const SeqResult& s : r.seqs) on_result(s);
    return true;
}

void Engine::Impl::on_result(const SeqResult& r) {
    auto it = active.find(r.id);
    if (it == active.end()) {
        // No request owns it (cannot happen today): never leave a failed sequence's blocks behind.
        if (r.outcome == SeqOutcome::kFailed || r.outcome == SeqOutcome::kHandedOff) executor->finish(r.id);
        return;
    }
    switch (r.outcome) {
        case SeqOutcome::kPrefilling:
            return;
        case SeqOutcome::kSampled:
            on_token(*it->second, r.sample);
            return;
        case SeqOutcome::kFailed:
            log::engine().error("request {} failed in a step: {}", log_field(it->second->request_id),
                                r.status.to_string());
            finalize(r.id, FinishReason::kError, r.status);
            return;
        case SeqOutcome::kHandedOff:
            hand_off(*it->second, r.sample);
            return;
    }
}

// ---- disaggregation (engine thread, except import_loop) ----------------------------------------

void Engine::Impl::hand_off(Active& a, const SampleResult& r) {
    // The first token goes through this side's detokenizer and stop checker only to decide
    // whether it ends the request here; its text is the decode side's, which replays it.
    note_token(a);
    std::string delta;
    if (a.detok) {
        auto d = a.detok->push(r.token);
        if (!d.ok()) return finalize(a.seq, FinishReason::kError, d.status());
        delta = std::move(d).value();
    }
    StopUpdate u = a.stop->on_token(r.token, delta);
    if (u.finish != FinishReason::kNone) {
        TokenEvent ev{.token = r.token, .logprob = r.logprob, .top = {}};
        if (a.params.sampling.logprobs > 0) ev.top = r.top;
        a.pending.tokens.push_back(std::move(ev));
        a.pending.text += u.text;
        return finalize(a.seq, u.finish, {}, u.matched, u.matched_token);
    }
    const HandoffRequest& h = *a.params.handoff;
    if (leases.count(h.handoff_id))
        return finalize(a.seq, FinishReason::kError, invalid_argument("handoff_id is already leased"));
    const SequenceState* st = scheduler->get(a.seq);
    const SequenceSampler* sampler = executor->sampler(a.seq);
    MOE_CHECK(st != nullptr && sampler != nullptr);  // the step just handed it off
    HandoffEvent ev;
    ev.handoff_id = h.handoff_id;
    ev.first_token = TokenEvent{.token = r.token, .logprob = r.logprob, .top = {}};
    if (a.params.sampling.logprobs > 0) ev.first_token.top = r.top;
    ev.prompt_ids = a.params.prompt_ids;
    ev.seed = sampler->resolved_seed();
    ev.random_draws = sampler->num_draws();
    ev.cached_prompt_tokens = st->num_cached_prompt;
    ev.queue_seconds = a.scheduled ? seconds(a.first_scheduled - a.submitted) : 0;
    ev.ttft_seconds = seconds(a.first_token - a.submitted);
    ev.lease_seconds = std::chrono::duration<double>(h.lease).count();
    const auto table = kv->block_table(a.seq);
    const size_t n_blocks = std::min(table.size(), static_cast<size_t>(kv->blocks_for(st->num_prompt)));
    ev.block_ids.assign(table.begin(), table.begin() + static_cast<std::ptrdiff_t>(n_blocks));
    const auto hashes = kv->block_hashes(a.seq);
    ev.block_hashes.assign(hashes.begin(),
                           hashes.begin() + static_cast<std::ptrdiff_t>(std::min(hashes.size(), n_blocks)));
    leases[h.handoff_id] = Lease{.seq = a.seq, .expiry = Clock::now() + h.lease};
    {
        std::lock_guard<std::mutex> lock(mu);
        live_handoffs.insert(h.handoff_id);
    }
    log::engine().debug("handoff {}: {} blocks leased for {} s", log_field(h.handoff_id), n_blocks, ev.lease_seconds);
    refresh_snapshot();  // NOTE: before the sink: its caller may read load() as soon as it returns
    a.sink->on_handoff(std::move(ev));
    // The request is over here (no on_final); the sequence lives on in the lease.
    const std::string id = a.request_id;
    const SeqId seq = a.seq;
    seq_of.erase(id);
    active.erase(seq);  // `a` is gone from here on
    refresh_snapshot();
    {
        std::lock_guard<std::mutex> lock(mu);
        live_ids.erase(id);
        if (live_ids.empty()) cv_idle.notify_all();
    }
}

void Engine::Impl::end_lease(const std::string& handoff_id, const char* why) {
    auto it = leases.find(handoff_id);
    if (it == leases.end()) return;
    executor->finish(it->second.seq);
    leases.erase(it);
    {
        std::lock_guard<std::mutex> lock(mu);
        live_handoffs.erase(handoff_id);
    }
    log::engine().debug("handoff {} {}: blocks freed", log_field(handoff_id), why);
}

void Engine::Impl::admit_prefilled(std::unique_ptr<Active> a) {
    const SeqId seq = next_seq++;
    a->seq = seq;
    a->stop = std::make_unique<StopChecker>(a->params.stopping);
    if (tokenizer)
        a->detok =
            std::make_unique<IncrementalDetokenizer>(*tokenizer, a->params.skip_special_tokens, a->params.prompt_ids);
    seq_of[a->request_id] = seq;
    Active& r = *a;
    active[seq] = std::move(a);
    // The decode side owns the text: the first token is replayed here (and reaches the client
    // now, before the KV has arrived).
    const PrefilledParams& pre = *r.prefilled;
    SampleResult first{.token = pre.first_token.token, .logprob = pre.first_token.logprob, .top = pre.first_token.top};
    r.scheduled = true;
    r.first_scheduled = r.submitted;
    on_token(r, first);
    if (!active.count(seq)) return;  // the first token ended it (finalize acknowledged the prefill side)
    try_receive(seq);
}

void Engine::Impl::try_receive(SeqId seq) {
    auto it = active.find(seq);
    if (it == active.end()) return;
    Active& a = *it->second;
    const PrefilledParams& pre = *a.prefilled;
    StatusOr<ReceivePlan> plan =
        executor->add_prefilled(NewRequest{.id = seq,
                                           .prompt = a.params.prompt_ids,
                                           .max_tokens = a.params.stopping.max_tokens,
                                           .cache_salt = a.params.cache_salt},
                                pre.first_token.token, a.params.sampling, pre.seed, pre.random_draws);
    if (!plan.ok()) {
        if (plan.status().code() != StatusCode::kResourceExhausted)
            return finalize(seq, FinishReason::kError, plan.status());
        if (Clock::now() >= pre.room_deadline)
            return finalize(seq, FinishReason::kError,
                            unavailable("no KV room on the decode worker before the prefill lease ended: " +
                                        plan.status().message()));
        if (std::find(awaiting_room.begin(), awaiting_room.end(), seq) == awaiting_room.end())
            awaiting_room.push_back(seq);
        return;
    }
    awaiting_room.erase(std::remove(awaiting_room.begin(), awaiting_room.end(), seq), awaiting_room.end());
    ImportJob job{.seq = seq, .release = pre.release};
    for (size_t i = static_cast<size_t>(plan->num_cached_blocks); i < plan->table.size(); ++i) {
        job.src_index.push_back(static_cast<int32_t>(i));
        job.dst.push_back(plan->table[i]);
    }
    a.release_posted = true;
    if (job.src_index.empty()) {
        // Every block was in this worker's own prefix cache: nothing travels.
        executor->receive_done(seq);
        job.release_only = true;
        post_import(std::move(job));
        return;
    }
    job.pull = pre.pull;
    job.cancelled = std::make_shared<std::atomic<bool>>(false);
    importing[seq] = job.cancelled;
    post_import(std::move(job));
}

void Engine::Impl::post_import(ImportJob job) {
    {
        std::lock_guard<std::mutex> lock(import_mu);
        import_queue.push_back(std::move(job));
    }
    import_cv.notify_all();
}

void Engine::Impl::apply_imports_and_leases() {
    std::vector<ImportDone> done;
    std::vector<std::string> released;
    {
        std::lock_guard<std::mutex> lock(mu);
        done.swap(imports_done);
        released.swap(releases);
    }
    bool changed = !done.empty() || !released.empty();
    for (ImportDone& d : done) {
        importing.erase(d.seq);
        if (!active.count(d.seq)) {
            executor->finish(d.seq);  // the request ended while its blocks were being written
            continue;
        }
        if (d.status.ok()) {
            const int64_t bytes = d.num_blocks * cache->region_bytes() * cache->num_regions();
            stats->on_kv_import(d.seconds, bytes);
            log::engine().debug("request {}: {} KV blocks ({} bytes) pulled and acknowledged in {:.3f} ms",
                                log_field(active[d.seq]->request_id), d.num_blocks, bytes, d.seconds * 1e3);
            executor->receive_done(d.seq);
        } else {
            log::engine().warn("request {}: KV import failed: {}", log_field(active[d.seq]->request_id),
                               d.status.to_string());
            finalize(d.seq, FinishReason::kError, d.status);
        }
    }
    for (const std::string& id : released) end_lease(id, "released");
    const auto now = Clock::now();
    std::vector<std::string> expired;
    for (const auto& [id, lease] : leases)
        if (lease.expiry <= now) expired.push_back(id);
    for (const std::string& id : expired) {
        log::engine().info("handoff {}: lease expired before the decode worker released it", log_field(id));
        end_lease(id, "expired");
    }
    changed = changed || !expired.empty();
    // Prefilled requests waiting for room, oldest first, while they fit.
    const std::deque<SeqId> waiting = awaiting_room;
    for (SeqId seq : waiting) {
        try_receive(seq);
        if (std::find(awaiting_room.begin(), awaiting_room.end(), seq) != awaiting_room.end() && active.count(seq))
            break;  // FCFS: nobody overtakes it
    }
    if (changed) refresh_snapshot();
}

void Engine::Impl::import_loop() {
    for (;;) {
        ImportJob job;
        {
            std::unique_lock<std::mutex> lock(import_mu);
            import_cv.wait(lock, [&] { return import_stop || !import_queue.empty(); });
            if (import_queue.empty()) return;  // stopping, nothing left
            job = std::move(import_queue.front());
            import_queue.pop_front();
        }
        Status status;
        const auto t0 = Clock::now();
        // NOTE: a catch-all at a thread entry (house style): the transport's failure ends this
        // request, not the process.
        try {
            if (!job.release_only) {
                status = job.cancelled->load() ? Status(StatusCode::kCancelled, "cancelled before the KV pull")
                                               : job.pull(job.src_index, job.dst, *job.cancelled);
            }
            Status released = job.release ? job.release() : ok_status();
            if (status.ok() && !released.ok() && !job.release_only)
                status = released.with_context("acknowledging the KV handoff to the prefill worker");
            if (!released.ok()) log::engine().warn("KV handoff acknowledgement failed: {}", released.to_string());
        } catch (const std::exception& e) {
            status = internal_error(std::string("KV import threw: ") + e.what());
        } catch (...) {
            status = internal_error("KV import threw an exception of unknown type");
        }
        if (job.release_only) continue;
        {
            std::lock_guard<std::mutex> lock(mu);
            imports_done.push_back(ImportDone{.seq = job.seq,
                                              .status = std::move(status),
                                              .seconds = seconds(Clock::now() - t0),
                                              .num_blocks = static_cast<int64_t>(job.dst.size())});
        }
        cv.notify_all();
    }
}

void Engine::Impl::run() {
    log::engine().info("engine thread started");
    // NOTE: the catch-all of the engine thread (house style: only at thread entries). Any
    // exception out of a step, a sink or the scheduler lands here instead of std::terminate.
    try {
        serve();
    } catch (const std::exception& e) {
        fail_everything(std::string("unexpected exception in the engine thread: ") + e.what());
    } catch (...) {
        fail_everything("unexpected exception of unknown type in the engine thread");
    }
    log::engine().info("engine thread stopped");
}

void Engine::Impl::serve() {
    // Expert parallelism: the ranks' engines agree once per iteration whether to step or stop
    // (group_lockstep.h); alone, this is inactive and the loop is the single-process one.
    GroupLockstep group(model->expert_group());
    for (;;) {
        std::deque<std::unique_ptr<Active>> arrivals;
        std::vector<std::string> cancelled;
        bool stop_now = false;
        {
            std::unique_lock<std::mutex> lock(mu);
            // NOTE: no waiting while the group is busy: the other ranks would wait for this one.
            cv.wait_for(lock, std::chrono::milliseconds(group.busy() ? 0 : 50), [&] {
                return stopping || !inbox.empty() || !cancels.empty() || scheduler->has_work() || !releases.empty() ||
                       !imports_done.empty();
            });
            stop_now = stopping;
            if (stop_now && !group.active()) break;
            arrivals.swap(inbox);
            cancelled.swap(cancels);
        }
        for (auto& a : arrivals) admit(std::move(a));
        for (const auto& id : cancelled) {
            auto it = seq_of.find(id);
            if (it != seq_of.end()) finalize(it->second, FinishReason::kCancelled);
        }
        // Deadlines end requests at a step boundary, like a cancel.
        const auto now = Clock::now();
        std::vector<SeqId> expired;
        for (auto& [seq, a] : active)
            if (a->params.deadline && *a->params.deadline <= now) expired.push_back(seq);
        for (SeqId s : expired)
            finalize(s, FinishReason::kDeadline, Status(StatusCode::kDeadlineExceeded, "deadline exceeded"));
        apply_imports_and_leases();
        if (group.active()) {
            StatusOr<GroupLockstep::Decision> d = group.agree(scheduler->has_work(), stop_now);
            if (!d.ok())
                return fail_everything("expert-parallel group failed: " + d.status().to_string(),
                                       StatusCode::kUnavailable);
            if (d->stop && stop_now) break;
            if (d->stop)  // another rank stopped: this one cannot step alone
                return fail_everything("another rank of the expert-parallel group stopped", StatusCode::kUnavailable);
            if (d->step) step();
            if (!model->expert_parallel_status().ok())
                return fail_everything(model->expert_parallel_status().to_string(), StatusCode::kUnavailable);
            refresh_snapshot();
            continue;
        }
        // NOTE: work that cannot be scheduled now (should not happen: running sequences always
        // progress) must not spin the core.
        if (scheduler->has_work() && !step()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        refresh_snapshot();
    }
}

void Engine::Impl::abandon(Active& a, const Status& error) {
    FinalEvent f;
    f.reason = FinishReason::kError;
    f.prompt_tokens = static_cast<int64_t>(a.params.prompt_ids.size());
    f.completion_tokens = a.generated;
    f.total_seconds = seconds(Clock::now() - a.submitted);
    f.error = error;
    stats->on_finish(FinishReason::kError, f.total_seconds, -1, f.prompt_tokens, f.completion_tokens);
    try {
        a.sink->on_final(std::move(f));
    } catch (...) {
        log::engine().error("request {}: its sink threw while being told the engine failed", log_field(a.request_id));
    }
    std::lock_guard<std::mutex> lock(mu);
    live_ids.erase(a.request_id);
    if (live_ids.empty()) cv_idle.notify_all();
}

void Engine::Impl::fail_everything(const std::string& why, StatusCode code) {
    log::engine().critical("{}; every request in flight ends with {} and the engine stops serving", why,
                           status_code_name(code));
    failed.store(true);
    const Status error(code, why);
    for (auto& [seq, a] : active) abandon(*a, error);
    active.clear();
    seq_of.clear();
    // Requests keep arriving until the server sees the engine unhealthy; each still gets its one
    // final event. The scheduler and the executor are not touched again.
    const Status refused(code, "the engine failed earlier (" + why + "); request not run");
    for (;;) {
        std::deque<std::unique_ptr<Active>> arrivals;
        {
            std::unique_lock<std::mutex> lock(mu);
            cv.wait(lock, [&] { return stopping || !inbox.empty() || !cancels.empty(); });
            arrivals.swap(inbox);
            cancels.clear();
            if (arrivals.empty() && stopping) return;
        }
        for (auto& a : arrivals) abandon(*a, refused);
    }
}

}  // namespace moe
