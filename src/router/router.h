// moeserve router: the public moe.v1.Inference and moe.v1.Control APIs in front of disaggregated
// workers (prefill + decode, `moeserve serve --role ...`) or aggregated ones, so clients do not
// change (docs/ARCHITECTURE.md, "Disaggregated serving", "Router").
//
// Per request (a gRPC sync-server thread runs it; every call to a worker is blocking, with the
// client's deadline and cancellation propagated by ClientContext::FromServerContext):
//   1. validate and tokenize the request as `moeserve serve` does (build_generate_params: the
//      model directory's tokenizer and chat template; no weights are read);
//   2. hash the prompt's full blocks with the workers' block size and the request's cache_salt
//      (the chain KvBlockManager indexes) and pick a prefill worker by cached-prefix overlap and
//      load and a decode worker by KV headroom (routing_policy.h), from what each worker's
//      WorkerEvents stream reported;
//   3. Worker.Prefill on the prefill worker (a failure other than the client's own cancel or
//      deadline is retried once on another prefill worker), then Worker.Decode on the decode
//      worker, whose stream is relayed to the client. A Decode that does not end OK releases
//      the prefill worker's handoff (ReleaseHandoff) at once instead of waiting for its lease.
// With aggregated workers (--workers) step 3 is the worker's own public Generate (chosen the
// same way, retried once on another worker when it fails before its first message).
//
// Workers are checked on start: each answers Describe with the role its list says (prefill list:
// prefill or aggregated; decode list: decode or aggregated), every worker's ModelSignature
// equals the first one's, and the signature agrees with the router's config.json (architecture,
// layers, vocabulary). Anything else refuses to start with the worker and the field named.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "moe/status.h"

namespace moe::router {

struct RouterOptions {
    std::string host = "127.0.0.1";
    int port = 50051;                  // 0: pick a free one (Router::port())
    std::string model_dir;             // config.json + tokenizer (+ chat template); no weights read
    std::string served_model_name;     // GetModelInfo's name; default: the directory's name
    std::vector<std::string> prefill;  // internal addresses of prefill workers
    std::vector<std::string> decode;   // ... of decode workers
    std::vector<std::string> workers;  // ... of aggregated workers (instead of prefill + decode)
    std::string internal_secret;       // sent to workers as `authorization: Bearer <secret>`
    std::string admin_token;           // as `moeserve serve --admin-token` (src/server/auth.h)
    int max_message_bytes = 16 << 20;
    size_t max_prompt_bytes = 1 << 20;
    // How long start() waits for every worker's Describe and first event snapshot.
    std::chrono::milliseconds connect_timeout{std::chrono::seconds(60)};
    // Handoff lease asked of prefill workers (0: the worker's default).
    double lease_seconds = 0;
};

class Router {
public:
    // Loads the model directory's config and tokenizer, connects to and checks every worker,
    // subscribes to their events and starts serving.
    static StatusOr<std::unique_ptr<Router>> start(RouterOptions options);
    ~Router();

    int port() const;
    std::string address() const;
    // Stops admitting (Generate -> UNAVAILABLE); what Control.Drain does.
    void drain();
    // Drain, wait up to `grace` for requests in flight, cancel the rest, stop. Idempotent.
    void shutdown(std::chrono::milliseconds grace);

    struct Impl;

private:
    Router() = default;
    std::unique_ptr<Impl> impl_;
};

}  // namespace moe::router
