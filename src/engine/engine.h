// Engine: the step loop that turns requests into tokens.
//
// One engine thread owns the scheduler, the KV block manager, the model, the Executor (which
// owns every running sequence's sampler) and every request's detokenizer and stop checker. Other
// threads (gRPC handlers, the CLI) only call submit(), cancel(), abort(), drain() and load(),
// which hand work to the engine thread through a mutex-protected inbox. Results come back through
// each request's RequestSink, called on the engine thread.
//
//   submit() --inbox--> [engine thread] Executor::step (schedule -> forward -> sample)
//                                         -> per-sequence results -> detokenize -> stops
//                                                                          |
//   RequestSink::on_delta / on_final  <------------------------------------+
//
// Failures: a sequence whose step fails (forward error, sampling error) ends with kError and an
// INTERNAL status; the other requests go on. An exception escaping the step loop is caught at
// the engine thread's entry: every request in flight ends with kError/INTERNAL, the engine is
// marked failed (healthy() false, EngineLoad::failed), requests that still arrive end the same
// way, and the process goes on.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/metrics.h"
#include "engine/executor.h"
#include "engine/kv_event_hub.h"
#include "engine/request_limits.h"
#include "engine/sampler.h"
#include "engine/scheduler.h"
#include "engine/stop_checker.h"
#include "model/moe_transformer.h"
#include "moe/tokenizer.h"

namespace moe {

struct EngineOptions {
    SchedulerOptions scheduler;  // max_model_len is clamped to the model's context length
    int64_t kv_cache_bytes = 0;  // 0: kv_cache_fraction of the memory available now
    double kv_cache_fraction = 0.25;
    int64_t kv_block_size = 16;
    bool prefix_caching = true;
    DType kv_dtype = DType::kF32;  // f32 or bf16; kv_cache_dtype_from_name resolves a flag
    int64_t max_pending = 1024;    // submitted but not finished; beyond: RESOURCE_EXHAUSTED
    RequestLimits limits;          // what submit() accepts; the server validates against the same
    // Where the engine records its metrics (docs/ARCHITECTURE.md, "Metrics"); null: a registry of
    // its own. Engine::metrics() returns it: the servers add their families and serve it.
    std::shared_ptr<metrics::Registry> metrics;
    std::string metrics_model_name = "moeserve";  // the model_name label of the engine's metrics
    // Prefix-cache events for a KV-aware router (WorkerEvents.Subscribe): when set, the engine
    // thread publishes the KV block manager's stored/evicted hashes and its load here at each
    // step boundary (a short critical section, never a wait on a subscriber) and closes the hub
    // when the engine stops. Null: nothing is recorded.
    std::shared_ptr<KvEventHub> kv_events;
};

// Prefill role (disaggregation): run the prompt, sample the first token, then hold the prompt's
// KV blocks under a lease for a decode worker instead of decoding here.
struct HandoffRequest {
    std::string handoff_id;  // unique among this engine's live handoffs; at most 128 bytes
    std::chrono::milliseconds lease{std::chrono::seconds(30)};
};

struct GenerateParams {
    // Empty: the engine assigns one with new_request_id(). At most limits.max_request_id_bytes.
    std::string request_id;
    // Ids are unique per namespace: two submitters with different namespaces may use the same
    // request_id without colliding, and cancel() reaches only the namespace it is given. The
    // server puts a tag of the caller's credential here; in-process callers may leave it empty.
    std::string id_namespace;
    std::vector<int32_t> prompt_ids;  // already tokenized
    SamplingParams sampling;
    StopCriteria stopping;  // eos_token_ids is filled in by the engine from the model
    bool skip_special_tokens = true;
    int32_t stream_interval = 1;  // tokens per delta (the last delta may hold fewer)
    std::string cache_salt;       // isolates prefix-cache entries between tenants
    std::optional<std::chrono::steady_clock::time_point> deadline;
    // Set: a prefill-only request (see HandoffRequest). Its sink gets on_handoff instead of the
    // rest of the stream, unless the first token ends the request (EOS, a stop token or string,
    // max_tokens = 1), which ends normally (on_delta with the token and its text, on_final).
    std::optional<HandoffRequest> handoff;
};

struct TokenEvent {
    int32_t token = 0;
    float logprob = 0;
    std::vector<TokenLogprob> top;  // empty unless sampling.logprobs > 0
};

struct DeltaEvent {
    std::vector<TokenEvent> tokens;
    std::string text;  // complete UTF-8; stop strings withheld
};

struct FinalEvent {
    FinishReason reason = FinishReason::kNone;
    std::string matched_stop;              // the stop string that matched, if any
    std::optional<int32_t> matched_token;  // the EOS / stop token that matched, if any
    int64_t prompt_tokens = 0;
    int64_t completion_tokens = 0;
    int64_t cached_prompt_tokens = 0;
    double queue_seconds = 0;     // submit -> first scheduled
    double ttft_seconds = 0;      // submit -> first token
    double mean_itl_seconds = 0;  // mean gap between tokens after the first
    double total_seconds = 0;
    Status error;  // set when reason == kError
};

// A prefill-only request reached its handoff: everything the decode worker needs but the KV
// bytes, which stay in `block_ids` of this engine's cache (kv_cache()) until release_handoff(),
// the lease's expiry or stop().
struct HandoffEvent {
    std::string handoff_id;
    TokenEvent first_token;
    std::vector<int32_t> prompt_ids;
    uint64_t seed = 0;          // the sampler's resolved seed
    uint64_t random_draws = 0;  // draws taken (1: the first token)
    int64_t cached_prompt_tokens = 0;
    double queue_seconds = 0;
    double ttft_seconds = 0;
    double lease_seconds = 0;
    std::vector<int32_t> block_ids;          // the prompt's blocks, blocks_for(prompt) of them
    std::vector<Sha256Digest> block_hashes;  // chained hashes of the full ones
};

// Receives a request's output. Called on the engine thread, in order: zero or more on_delta,
// then exactly one on_final (also after cancel/abort). Must not block for long.
class RequestSink {
public:
    virtual ~RequestSink() = default;
    virtual void on_delta(DeltaEvent&& delta) = 0;
    virtual void on_final(FinalEvent&& final_event) = 0;
    // Prefill-only requests (GenerateParams::handoff): instead of on_final when the request is
    // handed off; nothing follows. The default drops it (the lease then expires).
    virtual void on_handoff(HandoffEvent&& /*event*/) {}
};

// The decode side of a handoff: a request whose prompt was computed by a prefill worker.
// Engine::submit_prefilled admits it as kReceiving, replays the first token through this
// engine's detokenizer and stop checker (the decode side owns the text), runs `pull` for the
// blocks its own prefix cache lacks on the engine's import thread, then `release`, then decodes.
struct PrefilledParams {
    GenerateParams params;  // prompt_ids: the prefill side's prompt; stopping.max_tokens the real one
    TokenEvent first_token;
    uint64_t seed = 0;
    uint64_t random_draws = 0;  // at most the context length
    int64_t cached_prompt_tokens = 0;
    double queue_seconds = 0;  // the prefill side's, reported to the client
    double ttft_seconds = 0;
    int64_t num_source_blocks = 0;  // must be blocks_for(prompt)
    // Give up waiting for free blocks at this time (the prefill lease's end).
    std::chrono::steady_clock::time_point room_deadline;
    // Copies source block src_index[i] (an index into the prefill side's block list) into this
    // engine's block dst[i], for every region. Runs on the import thread; should stop early
    // when `cancelled` turns true. Not called when nothing is missing.
    std::function<Status(std::span<const int32_t> src_index, std::span<const int32_t> dst,
                         const std::atomic<bool>& cancelled)>
        pull;
    // The acknowledgement (the prefill side frees its lease): called exactly once per accepted
    // request on the import thread, after pull (or instead of it when the request ended first).
    // An error after a successful pull (the lease was gone, so the bytes may have been
    // overwritten) fails the request.
    std::function<Status()> release;
};

struct EngineLoad {
    int64_t waiting = 0;
    int64_t running = 0;
    int64_t pending = 0;  // submitted and not finished (includes the inbox)
    int64_t kv_blocks_total = 0;
    int64_t kv_blocks_free = 0;    // allocatable now (free + evictable cached)
    int64_t kv_blocks_cached = 0;  // blocks in the prefix index
    int64_t kv_block_size = 0;
    int64_t num_preemptions = 0;   // since start
    int64_t steps = 0;             // since start
    int64_t generated_tokens = 0;  // since start
    bool draining = false;
    int64_t handoffs = 0;   // prefill side: leases held
    int64_t receiving = 0;  // decode side: prefilled sequences waiting for room or for their KV
    // An unexpected exception escaped the engine thread's step loop: every request in flight
    // ended with INTERNAL and nothing is served any more (readiness should say NOT_SERVING).
    bool failed = false;
    // Expert parallelism: per layer, per logical expert, the (token, slot) pairs this rank's
    // tokens routed to it since start (MoeTransformer::expert_load; refreshed every step). Empty
    // without expert parallelism, empty rows for dense layers.
    std::vector<std::vector<int64_t>> expert_load;
};

// The KV cache dtype for a --kv-cache-dtype flag: "f32", "bf16", or "auto": the dtype the model's
// matrices are served in when that is bf16 (as vLLM's auto takes the model's dtype; K and V are
// then rounded to bf16 as a bf16 model in transformers rounds them), else f32.
StatusOr<DType> kv_cache_dtype_from_name(std::string_view name, DType matrix_dtype);

class Engine {
public:
    // `tokenizer` may be null (token ids in and out only, no text). Sizes the KV cache from the
    // options and allocates it.
    static StatusOr<std::unique_ptr<Engine>> create(std::unique_ptr<MoeTransformer> model,
                                                    std::unique_ptr<Tokenizer> tokenizer, const EngineOptions& options);
    ~Engine();  // stops the thread; pending requests end with kCancelled

    // Starts the engine thread.
    Status start();
    // Stops the engine thread; requests still pending end with kCancelled.
    void stop();

    // Validates against options().limits and enqueues. INVALID_ARGUMENT naming the field and the
    // limit (prompt empty or too long, max_tokens beyond the context, token id outside the
    // vocabulary, sampling or stop parameters out of range, request_id / cache_salt too long,
    // request_id already pending in the same namespace); RESOURCE_EXHAUSTED when max_pending
    // requests are pending; UNAVAILABLE while draining. On OK the sink will get exactly one
    // on_final. Returns the request id (assigned when params.request_id is empty).
    //
    // A request whose params.deadline passes ends at the next step boundary with
    // FinishReason::kDeadline (FinalEvent::error is DEADLINE_EXCEEDED), freeing its KV blocks.
    StatusOr<std::string> submit(GenerateParams params, std::shared_ptr<RequestSink> sink);

    // Ends a request with kCancelled at the next step boundary, freeing its KV blocks. False if
    // no pending request has that id in that namespace.
    bool cancel(const std::string& request_id, const std::string& id_namespace = {});

    // ---- disaggregation (docs/ARCHITECTURE.md, "Disaggregated serving")
    // Decode side: validates like submit() plus the handoff's own fields (first token in the
    // vocabulary, random_draws <= the context length, num_source_blocks == blocks the prompt
    // takes, pull and release set). On OK, `release` will be called exactly once and the sink
    // gets exactly one on_final. A cancel while the blocks are being pulled ends the request at
    // once; its blocks are freed when the pull returns.
    StatusOr<std::string> submit_prefilled(PrefilledParams params, std::shared_ptr<RequestSink> sink);
    // Prefill side: frees a handoff's leased blocks at the next step boundary. False when no
    // live lease has that id (released, expired, or never made).
    bool release_handoff(const std::string& handoff_id);
    // The cache the handoffs' block ids refer to (for a KvTransport); the engine's lifetime.
    const KvCache& kv_cache() const;

    // Stops admitting (submit -> UNAVAILABLE); pending requests continue.
    void drain();
    // Waits until nothing is pending or the timeout passes; true if idle.
    bool wait_idle(std::chrono::milliseconds timeout);

    EngineLoad load() const;
    // False once the engine has failed (see EngineLoad::failed); any thread, never blocks.
    bool healthy() const;
    const ModelConfig& config() const;
    const Tokenizer* tokenizer() const;
    int64_t max_model_len() const;
    const EngineOptions& options() const;
    // The registry the engine records into (EngineOptions::metrics, or its own): what GET
    // /metrics renders (metrics::render_text). Valid for the engine's lifetime; any thread.
    metrics::Registry& metrics() const;

    // Test-only (tests/engine): faults injected into the engine's Executor (see ExecutorFaults).
    // Call before start(); hooks run on the engine thread.
    void set_executor_faults_for_testing(ExecutorFaults faults);

private:
    struct Impl;
    explicit Engine(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace moe
