// The OpenAI-compatible HTTP API over one Engine, in the same process as the gRPC server:
//
//   POST /v1/completions       POST /v1/chat/completions   (JSON, or SSE with "stream": true)
//   GET  /v1/models            GET  /v1/models/{id}
//   GET  /health  (liveness)   GET  /ready (readiness)      GET /metrics (Prometheus text)
//
// Built on Boost.Beast over Asio (docs/ARCHITECTURE.md, "The HTTP API", says why and gives the
// measurements). Threads: `num_threads` Asio threads run every connection; each connection runs on
// its own strand, so its handlers never run concurrently. The engine thread calls each request's
// sink, which only posts the event to the connection's strand: nothing here blocks the engine,
// and nothing blocks an Asio thread on the engine.
//
// A client that disconnects (its socket reads EOF or an error while its request runs, or a write
// fails) cancels the request: the engine frees its KV blocks within one step, as for a cancelled
// gRPC call.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "engine/engine.h"
#include "http/openai_api.h"

namespace moe::http {

struct HttpOptions {
    std::string host = "127.0.0.1";
    int port = 8000;  // 0: pick a free port (HttpServer::port() says which)
    int num_threads = 2;
    // Limits on what a client sends. Beyond the body limit: 413; beyond the header limit: 431.
    int64_t max_body_bytes = 16 << 20;
    int64_t max_header_bytes = 64 << 10;
    int max_json_depth = 32;
    // Open connections; beyond, a new connection is closed at once (and a warning logged).
    int64_t max_connections = 4096;
    // A connection with no request for this long (keep-alive idle, or a request arriving too
    // slowly) is closed.
    std::chrono::milliseconds idle_timeout{std::chrono::seconds(60)};
    // A client that takes longer than this to accept one write is dropped and its request
    // cancelled.
    std::chrono::milliseconds write_timeout{std::chrono::seconds(60)};
    // Output one stream may hold unsent for a client that reads slower than it generates; beyond,
    // the request is cancelled and the connection closed (as gRPC's --stream-buffer-bytes).
    int64_t stream_buffer_bytes = 4 << 20;

    std::string model_id = "demo";  // what /v1/models lists and `model` must name
    std::string model_alias;        // also accepted as `model` (e.g. the model directory)
    // "authorization: Bearer <admin_token>" puts a caller's requests in the admin namespace
    // ("token:admin", as on gRPC: Control.Abort reaches them); other callers' ids are their
    // connection's. OpenAI clients always send some key, so a wrong one is not refused.
    std::string admin_token;
    ChatRenderer render_chat;             // null: chat requests get 400 (the model has no chat template)
    std::string chat_unavailable_reason;  // said in that 400 (e.g. why the template failed to load)
    // /metrics body (Prometheus text 0.0.4); null: the engine's registry (Engine::metrics(), to
    // which this server adds moe:http_requests_total{endpoint, code}).
    std::function<std::string()> metrics_text;
    // Readiness follows this probe; empty: Engine::healthy().
    std::function<bool()> engine_healthy;
};

class HttpServer {
public:
    // Binds and starts serving. `engine` must be started and must outlive the server.
    static StatusOr<std::unique_ptr<HttpServer>> start(Engine& engine, HttpOptions options);
    ~HttpServer();  // shutdown(0) if not done

    int port() const;
    std::string address() const;  // "HOST:PORT" as bound

    // New generation requests get 503 and /ready 503; requests in flight go on. Idempotent.
    void drain();
    bool draining() const;

    // drain(), wait up to `grace` for this server's requests, cancel the rest, give their
    // connections a moment to send the end, then stop the threads. Idempotent.
    void shutdown(std::chrono::milliseconds grace);

    // Requests this server submitted that have not finished.
    int64_t active_requests() const;
    // Open connections.
    int64_t connections() const;

    struct Impl;

private:
    explicit HttpServer(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace moe::http
