// The engine's Prometheus metrics: what it registers and the hooks engine.cc calls.
//
// Names follow vLLM's (the `vllm:` prefix, same meaning, same label `model_name`) so that vLLM
// dashboards and alerts work unchanged; what vLLM has no metric for uses the `moe:` prefix. The
// full list, with where each is recorded, is in docs/ARCHITECTURE.md ("Metrics").
//
// Threads: every hook runs on the engine thread. The children are resolved once, here, so each
// hook is a few relaxed atomic updates (no lock, no allocation, no map lookup).
#pragma once

#include <string>

#include "core/metrics.h"
#include "engine/stop_checker.h"

namespace moe {

class EngineMetrics {
public:
    // `max_model_len` bounds the token-count histograms' buckets (1, 2, 5, 10, ... up to it).
    EngineMetrics(metrics::Registry& registry, const std::string& model_name, int64_t max_model_len);

    // After each step that ran: its wall time and the tokens it computed.
    void on_step(double seconds, int64_t num_tokens);
    // Sequences that lost their KV blocks in a step (recomputed later).
    void on_preempted(int64_t num_preempted) { preemptions_->inc(static_cast<double>(num_preempted)); }
    // A request's first token: its prompt is done (vLLM counts prompt tokens and prefix-cache
    // queries and hits here, in tokens).
    void on_first_token(double ttft_seconds, int64_t prompt_tokens, int64_t cached_prompt_tokens);
    // Every token after the first, with the gap since the one before.
    void on_next_token(double inter_token_seconds);
    // Every generated token (the first included).
    void on_token() { generation_tokens_->inc(); }
    // A request's end. queue_seconds < 0: it was never scheduled (not observed).
    void on_finish(FinishReason reason, double e2e_seconds, double queue_seconds, int64_t prompt_tokens,
                   int64_t generation_tokens);
    // Disaggregation, decode side: one completed KV pull of a handed-off prompt (its blocks'
    // bytes and the pull's wall time, acknowledgement included).
    void on_kv_import(double seconds, int64_t bytes) {
        kv_imports_->inc();
        kv_import_bytes_->inc(static_cast<double>(bytes));
        kv_import_seconds_->observe(seconds);
    }
    // The scheduler's and the KV pool's state, after each step and each request's end.
    void on_load(int64_t running, int64_t waiting, int64_t kv_blocks_total, int64_t kv_blocks_free,
                 int64_t kv_blocks_cached);

private:
    metrics::Gauge* running_;
    metrics::Gauge* waiting_;
    metrics::Gauge* kv_usage_;
    metrics::Gauge* kv_blocks_total_;
    metrics::Gauge* kv_blocks_used_;
    metrics::Gauge* kv_blocks_cached_;
    metrics::Counter* prompt_tokens_;
    metrics::Counter* generation_tokens_;
    metrics::Counter* preemptions_;
    metrics::Counter* prefix_queries_;
    metrics::Counter* prefix_hits_;
    metrics::Counter* finished_[6];  // by FinishReason (kNone unused)
    metrics::Histogram* ttft_;
    metrics::Histogram* itl_;
    metrics::Histogram* e2e_;
    metrics::Histogram* queue_;
    metrics::Histogram* request_prompt_tokens_;
    metrics::Histogram* request_generation_tokens_;
    metrics::Histogram* step_seconds_;
    metrics::Histogram* step_tokens_;
    metrics::Counter* kv_imports_;
    metrics::Counter* kv_import_bytes_;
    metrics::Histogram* kv_import_seconds_;
};

// The finished_reason label of vllm:request_success_total: vLLM's "stop", "length", "abort"
// (our kCancelled) and "error"; "deadline" is ours (vLLM has no request deadline).
const char* finished_reason_label(FinishReason reason);

}  // namespace moe
