// The gRPC server over one Engine: moe.v1.Inference (Generate), moe.v1.Control, grpc.health.v1
// and server reflection, on one listening port.
//
// Threads: gRPC's callback threads run the handlers (validate, tokenize, Engine::submit); the
// engine thread calls each request's sink, which queues messages for that stream's reactor.
// Nothing here blocks a gRPC thread on the engine.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "engine/engine.h"
#include "server/request_builder.h"

namespace moe::server {

struct ServerOptions {
    std::string host = "127.0.0.1";
    int port = 50051;  // 0: pick a free port (Server::port() says which)
    // Reported by Control.GetModelInfo / GetServerInfo.
    std::string model_name = "built-in demo model";
    std::string dtype = "f32";
    std::string backend = "cpu";
    int threads = 0;
    std::map<std::string, std::string> config;  // effective flags, for GetServerInfo
    int max_message_bytes = 16 << 20;           // gRPC receive limit (a long text prompt)

    // Output a stream may hold for a client that does not read (beyond the message being
    // written), and all streams together: past either, the request is cancelled and its call
    // ends RESOURCE_EXHAUSTED. Server memory for unread output is bounded by the total.
    int64_t stream_buffer_bytes = 4 << 20;
    int64_t total_stream_buffer_bytes = int64_t{256} << 20;

    // ---- security (see src/server/auth.h for who may call what)
    // PEM files. Both cert and key: TLS. With client_ca too: mTLS, every client must present a
    // certificate signed by it. None: plaintext (a warning is logged for a non-loopback host).
    std::string tls_cert_file;
    std::string tls_key_file;
    std::string tls_client_ca_file;
    // Empty: admin is any loopback peer. Set: admin is whoever sends "authorization: Bearer
    // <admin_token>"; Drain and Abort of another caller's request need admin.
    std::string admin_token;
    // Connection hygiene: the server pings an idle-looking client every keepalive_time and drops
    // it if no answer comes within keepalive_timeout; a connection with no call for
    // max_connection_idle is closed. 0 leaves gRPC's default.
    std::chrono::milliseconds keepalive_time{std::chrono::minutes(2)};
    std::chrono::milliseconds keepalive_timeout{std::chrono::seconds(20)};
    std::chrono::milliseconds max_connection_idle{std::chrono::minutes(5)};
    // The served model's chat template, for GenerateRequest.chat (loaded once at start, shared by
    // every request). Null: chat input is refused with INVALID_ARGUMENT, naming
    // chat_template_error when it is set (why loading failed).
    std::shared_ptr<const tmpl::ChatTemplate> chat_template;
    std::string chat_template_error;
    // Readiness follows this probe (polled every health_poll); empty: Engine::healthy(). Tests
    // inject a failing engine through it.
    std::function<bool()> engine_healthy;
    std::chrono::milliseconds health_poll{100};

    // Expert parallelism (GetServerInfo): this server's rank of the group and the experts it
    // holds per MoE layer. world_size 1 and no layers without it.
    struct ExpertParallelInfo {
        int rank = 0;
        int world_size = 1;
        std::string comm;                                                     // "mpi"
        std::vector<std::pair<int64_t, std::vector<int32_t>>> layer_experts;  // (layer, logical ids)
    };
    ExpertParallelInfo expert_parallel;

    // Disaggregated serving (docs/ARCHITECTURE.md, "Disaggregated serving"): moe.v1.Worker on an
    // internal port of its own, never the public one.
    struct WorkerOptions {
        bool enabled = false;
        std::string role = "aggregated";  // "prefill", "decode" or "aggregated"
        std::string host = "127.0.0.1";   // loopback unless set otherwise
        int port = 0;                     // 0: pick a free one (Server::internal_address says which)
        // Every call must carry "authorization: Bearer <secret>" (constant-time compare); the
        // decode worker sends it to the prefill worker too. Required.
        std::string secret;
        std::string kv_transport = "ucx";                           // "ucx" or "inproc" (in-process peers only: tests)
        std::chrono::milliseconds lease{std::chrono::seconds(30)};  // PrefillRequest.lease_seconds 0
        std::chrono::milliseconds max_lease{std::chrono::minutes(10)};
        // The ModelSignature's identity fields (the rest comes from the engine).
        std::string architecture;
        std::string weights_fingerprint;
        // The engine's prefix-cache events (EngineOptions::kv_events): served as
        // moe.v1.WorkerEvents on the internal port when set; closed at shutdown.
        std::shared_ptr<KvEventHub> kv_events;
    };
    WorkerOptions worker;
};

class Server {
public:
    // Binds, registers the services and starts serving. `engine` must be started and must
    // outlive the server. Readiness ("moe.v1.Inference") is SERVING once this returns; it turns
    // NOT_SERVING on drain and, for good, when the engine reports failure (Engine::healthy()).
    static StatusOr<std::unique_ptr<Server>> start(Engine& engine, ServerOptions options);
    ~Server();  // shutdown(0) if not done

    int port() const;
    // "HOST:PORT" as bound.
    std::string address() const;
    // The internal (moe.v1.Worker) "HOST:PORT" as bound; empty without options.worker.enabled.
    std::string internal_address() const;

    // Stops admitting (Generate -> UNAVAILABLE) and turns readiness NOT_SERVING. Idempotent;
    // also what Control.Drain does.
    void drain();
    bool draining() const;

    // True when TLS is on.
    bool tls() const;

    // Cancels every request this server submitted that has not finished; returns how many.
    int64_t cancel_all();

    // The SIGTERM path: drain(), wait up to `grace` for pending requests, cancel the rest, wait
    // briefly for their streams to end, then stop the gRPC server. Idempotent.
    void shutdown(std::chrono::milliseconds grace);

    // Blocks until shutdown() has completed (from another thread).
    void wait();

    struct Core;  // shared with the service implementations

private:
    Server();
    std::shared_ptr<Core> core_;
};

}  // namespace moe::server
