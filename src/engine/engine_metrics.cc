#include "engine/engine_metrics.h"

#include <algorithm>
#include <vector>

namespace moe {

namespace {

// vLLM's buckets (vllm/v1/metrics/loggers.py) so that quantiles compare with a vLLM server's,
// with finer ones below where a CPU server's values fall (extra buckets do not disturb
// histogram_quantile over vLLM's).
const std::vector<double> kTtftBuckets = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25,  0.5,   0.75,
                                          1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
const std::vector<double> kItlBuckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1,  0.15, 0.2,  0.3,
                                         0.4,   0.5,    0.75,  1.0,  2.5,   5.0,  7.5,   10.0, 20.0, 40.0, 80.0};
const std::vector<double> kRequestBuckets = {0.001, 0.005, 0.01, 0.025, 0.05,  0.1,   0.3,   0.5,    0.8,
                                             1.0,   1.5,   2.0,  2.5,   5.0,   10.0,  15.0,  20.0,   30.0,
                                             40.0,  50.0,  60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
const std::vector<double> kStepBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                          0.1,    0.25,  0.5,    1.0,   2.5,  5.0,   10.0};
const std::vector<double> kStepTokenBuckets = {1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384};

// vLLM's build_1_2_5_buckets: 1, 2, 5, 10, 20, 50, ... up to max_value.
std::vector<double> buckets_1_2_5(int64_t max_value) {
    std::vector<double> out;
    for (int64_t scale = 1; scale <= max_value; scale *= 10)
        for (int64_t m : {1, 2, 5})
            if (m * scale <= max_value) out.push_back(static_cast<double>(m * scale));
    return out;
}

}  // namespace

const char* finished_reason_label(FinishReason reason) {
    switch (reason) {
        case FinishReason::kNone:
            return "none";
        case FinishReason::kStop:
            return "stop";
        case FinishReason::kLength:
            return "length";
        case FinishReason::kCancelled:
            return "abort";
        case FinishReason::kError:
            return "error";
        case FinishReason::kDeadline:
            return "deadline";
    }
    return "none";
}

EngineMetrics::EngineMetrics(metrics::Registry& reg, const std::string& model_name, int64_t max_model_len) {
    const std::vector<std::string> m = {"model_name"};
    const std::vector<std::string> v = {model_name};
    running_ = &reg.gauge("vllm:num_requests_running", "Number of requests in model execution batches.", m).labels(v);
    waiting_ = &reg.gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", m).labels(v);
    kv_usage_ = &reg.gauge("vllm:kv_cache_usage_perc",
                           "KV-cache usage: the fraction of KV blocks in use (1 = 100%); blocks held only by the "
                           "prefix cache count as free.",
                           m)
                     .labels(v);
    kv_blocks_total_ = &reg.gauge("moe:kv_blocks_total", "KV-cache blocks in the pool.", m).labels(v);
    kv_blocks_used_ = &reg.gauge("moe:kv_blocks_used", "KV-cache blocks held by running requests.", m).labels(v);
    kv_blocks_cached_ =
        &reg.gauge("moe:kv_blocks_cached", "KV-cache blocks in the prefix-cache index (reusable).", m).labels(v);
    prompt_tokens_ = &reg.counter("vllm:prompt_tokens_total", "Number of prefill tokens processed.", m).labels(v);
    generation_tokens_ =
        &reg.counter("vllm:generation_tokens_total", "Number of generation tokens processed.", m).labels(v);
    preemptions_ =
        &reg.counter("vllm:num_preemptions_total", "Cumulative number of preemptions from the engine.", m).labels(v);
    prefix_queries_ = &reg.counter("vllm:prefix_cache_queries_total",
                                   "Prefix-cache queries, in prompt tokens looked up (hit rate: hits / queries).", m)
                           .labels(v);
    prefix_hits_ =
        &reg.counter("vllm:prefix_cache_hits_total", "Prefix-cache hits, in prompt tokens found cached.", m).labels(v);
    auto& finished = reg.counter("vllm:request_success_total",
                                 "Count of finished requests by finish reason (stop, length, abort, deadline, error).",
                                 {"model_name", "finished_reason"});
    for (int r = 0; r < 6; ++r) {
        const auto reason = static_cast<FinishReason>(r);
        finished_[r] =
            reason == FinishReason::kNone ? nullptr : &finished.labels({model_name, finished_reason_label(reason)});
    }
    kv_imports_ = &reg.counter("moe:kv_imports_total",
                               "Prompts whose KV was pulled from a prefill worker (disaggregated serving).", m)
                       .labels(v);
    kv_import_bytes_ =
        &reg.counter("moe:kv_import_bytes_total", "Bytes of KV pulled from prefill workers.", m).labels(v);
    kv_import_seconds_ =
        &reg.histogram("moe:kv_import_seconds",
                       "Wall time of one prompt's KV pull and its acknowledgement, in seconds.", kItlBuckets, m)
             .labels(v);
    ttft_ = &reg.histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                           kTtftBuckets, m)
                 .labels(v);
    itl_ = &reg.histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
                          kItlBuckets, m)
                .labels(v);
    e2e_ = &reg.histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
                          kRequestBuckets, m)
                .labels(v);
    queue_ = &reg.histogram("vllm:request_queue_time_seconds",
                            "Histogram of time spent in WAITING phase for request (submit to first scheduled).",
                            kRequestBuckets, m)
                  .labels(v);
    const std::vector<double> token_buckets = buckets_1_2_5(std::max<int64_t>(max_model_len, 1));
    request_prompt_tokens_ =
        &reg.histogram("vllm:request_prompt_tokens", "Number of prefill tokens processed.", token_buckets, m).labels(v);
    request_generation_tokens_ =
        &reg.histogram("vllm:request_generation_tokens", "Number of generation tokens processed.", token_buckets, m)
             .labels(v);
    step_seconds_ = &reg.histogram("moe:engine_step_duration_seconds",
                                   "Wall time of one engine step (schedule, forward, sample, update).", kStepBuckets, m)
                         .labels(v);
    step_tokens_ = &reg.histogram("vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.",
                                  kStepTokenBuckets, m)
                        .labels(v);
}

void EngineMetrics::on_step(double seconds, int64_t num_tokens) {
    step_seconds_->observe(seconds);
    step_tokens_->observe(static_cast<double>(num_tokens));
}

void EngineMetrics::on_first_token(double ttft_seconds, int64_t prompt_tokens, int64_t cached_prompt_tokens) {
    ttft_->observe(ttft_seconds);
    prompt_tokens_->inc(static_cast<double>(prompt_tokens));
    prefix_queries_->inc(static_cast<double>(prompt_tokens));
    prefix_hits_->inc(static_cast<double>(cached_prompt_tokens));
}

void EngineMetrics::on_next_token(double inter_token_seconds) {
    itl_->observe(inter_token_seconds);
}

void EngineMetrics::on_finish(FinishReason reason, double e2e_seconds, double queue_seconds, int64_t prompt_tokens,
                              int64_t generation_tokens) {
    const int r = static_cast<int>(reason);
    if (r > 0 && r < 6) finished_[r]->inc();
    e2e_->observe(e2e_seconds);
    if (queue_seconds >= 0) queue_->observe(queue_seconds);
    request_prompt_tokens_->observe(static_cast<double>(prompt_tokens));
    request_generation_tokens_->observe(static_cast<double>(generation_tokens));
}

void EngineMetrics::on_load(int64_t running, int64_t waiting, int64_t kv_blocks_total, int64_t kv_blocks_free,
                            int64_t kv_blocks_cached) {
    running_->set(static_cast<double>(running));
    waiting_->set(static_cast<double>(waiting));
    const int64_t used = kv_blocks_total - kv_blocks_free;
    kv_blocks_total_->set(static_cast<double>(kv_blocks_total));
    kv_blocks_used_->set(static_cast<double>(used));
    kv_blocks_cached_->set(static_cast<double>(kv_blocks_cached));
    kv_usage_->set(kv_blocks_total > 0 ? static_cast<double>(used) / static_cast<double>(kv_blocks_total) : 0.0);
}

}  // namespace moe
