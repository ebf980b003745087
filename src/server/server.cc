#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include <algorithm>
#include <fstream>
#include <limits>
#include <sstream>
#include <thread>

#include "core/logging.h"
#include "server/auth.h"
#include "server/server_core.h"
#include "server/worker_events_service.h"

namespace moe::server {

namespace {

void stop_monitor(Server::Core& core) {
    {
        std::lock_guard<std::mutex> lock(core.monitor_mu);
        core.monitor_stop = true;
    }
    core.monitor_cv.notify_all();
    if (core.monitor.joinable()) core.monitor.join();
}

void run_monitor(Server::Core* core) {
    std::unique_lock<std::mutex> lock(core->monitor_mu);
    while (!core->monitor_cv.wait_for(lock, core->options.health_poll, [&] { return core->monitor_stop; })) {
        if (core->engine_failed.load() || core->engine_healthy()) continue;
        core->engine_failed.store(true);
        log::get("server")->error("the engine has failed: readiness NOT_SERVING, new requests get UNAVAILABLE");
        core->set_ready(false);
    }
}

}  // namespace

StatusOr<std::string> read_pem(const std::string& path, const char* flag) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return invalid_argument(std::string(flag) + ": cannot read " + path);
    std::ostringstream ss;
    ss << in.rdbuf();
    if (ss.str().find("-----BEGIN") == std::string::npos)
        return invalid_argument(std::string(flag) + ": " + path + " is not a PEM file");
    return ss.str();
}

StatusOr<std::shared_ptr<grpc::ServerCredentials>> make_credentials(const ServerOptions& o) {
    if (o.tls_cert_file.empty() != o.tls_key_file.empty())
        return invalid_argument("--tls-cert and --tls-key must be given together");
    if (o.tls_cert_file.empty()) {
        if (!o.tls_client_ca_file.empty())
            return invalid_argument("--tls-client-ca needs --tls-cert and --tls-key (mTLS is TLS first)");
        return grpc::InsecureServerCredentials();
    }
    grpc::SslServerCredentialsOptions ssl;
    grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
    MOE_ASSIGN_OR_RETURN(pair.private_key, read_pem(o.tls_key_file, "--tls-key"));
    MOE_ASSIGN_OR_RETURN(pair.cert_chain, read_pem(o.tls_cert_file, "--tls-cert"));
    ssl.pem_key_cert_pairs.push_back(std::move(pair));
    if (!o.tls_client_ca_file.empty()) {
        MOE_ASSIGN_OR_RETURN(ssl.pem_root_certs, read_pem(o.tls_client_ca_file, "--tls-client-ca"));
        ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    } else {
        ssl.client_certificate_request = GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
    }
    return grpc::SslServerCredentials(ssl);
}

Server::Server() : core_(std::make_shared<Core>()) {}

Server::~Server() {
    shutdown(std::chrono::milliseconds(0));
    stop_monitor(*core_);
}

StatusOr<std::unique_ptr<Server>> Server::start(Engine& engine, ServerOptions options) {
    if (options.port < 0 || options.port > 65535)
        return invalid_argument("port must be in [0, 65535], got " + std::to_string(options.port));
    if (options.max_message_bytes < 1024)
        return invalid_argument("max_message_bytes must be >= 1024, got " + std::to_string(options.max_message_bytes));
    if (options.stream_buffer_bytes < 1024 || options.total_stream_buffer_bytes < options.stream_buffer_bytes)
        return invalid_argument("stream_buffer_bytes must be >= 1024 and <= total_stream_buffer_bytes, got " +
                                std::to_string(options.stream_buffer_bytes) + " and " +
                                std::to_string(options.total_stream_buffer_bytes));
    MOE_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials, make_credentials(options));
    std::unique_ptr<Server> server(new Server());
    Core& core = *server->core_;
    core.engine = &engine;
    core.options = std::move(options);
    core.model.tokenizer = engine.tokenizer();
    core.model.vocab_size = engine.config().vocab_size;
    core.model.max_model_len = engine.max_model_len();
    core.limits = engine.options().limits;
    core.model.chat_template = core.options.chat_template.get();
    core.model.chat_template_error = core.options.chat_template_error;
    core.handled = &engine.metrics().counter("grpc_server_handled_total",
                                             "Total number of RPCs completed on the server, regardless of success "
                                             "or failure.",
                                             {"grpc_type", "grpc_service", "grpc_method", "grpc_code"});
    core.inference = make_inference_service(&core);
    core.control = make_control_service(&core);

    // Both are process-wide switches that must precede the builder.
    grpc::EnableDefaultHealthCheckService(true);
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();

    const std::string host =
        core.options.host.find(':') != std::string::npos ? "[" + core.options.host + "]" : core.options.host;
    const std::string address = host + ":" + std::to_string(core.options.port);
    grpc::ServerBuilder builder;
    builder.AddListeningPort(address, credentials, &core.bound_port);
    builder.SetMaxReceiveMessageSize(core.options.max_message_bytes);
    auto ms = [](std::chrono::milliseconds d) {
        return static_cast<int>(std::min<int64_t>(d.count(), std::numeric_limits<int>::max()));
    };
    if (core.options.keepalive_time.count() > 0)
        builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, ms(core.options.keepalive_time));
    if (core.options.keepalive_timeout.count() > 0)
        builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, ms(core.options.keepalive_timeout));
    if (core.options.max_connection_idle.count() > 0)
        builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, ms(core.options.max_connection_idle));
    // gRPC sets SO_REUSEPORT by default: a second server on a busy port would then bind and
    // silently share the traffic instead of failing.
    builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    builder.RegisterService(core.inference.get());
    builder.RegisterService(core.control.get());
    core.grpc_server = builder.BuildAndStart();
    if (!core.grpc_server || core.bound_port == 0)
        return unavailable("could not listen on " + address + " (address in use or not local?)");
    if (core.options.worker.enabled) {
        const auto& w = core.options.worker;
        if (w.port < 0 || w.port > 65535)
            return invalid_argument("--internal-port must be in [0, 65535], got " + std::to_string(w.port));
        StatusOr<std::unique_ptr<grpc::Service>> worker = make_worker_service(&core);
        if (!worker.ok()) {
            core.grpc_server->Shutdown();
            return worker.status();
        }
        core.worker = std::move(worker).value();
        const std::string ihost = w.host.find(':') != std::string::npos ? "[" + w.host + "]" : w.host;
        const std::string iaddress = ihost + ":" + std::to_string(w.port);
        grpc::ServerBuilder internal;
        internal.AddListeningPort(iaddress, grpc::InsecureServerCredentials(), &core.internal_port);
        internal.SetMaxReceiveMessageSize(core.options.max_message_bytes);
        internal.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
        if (core.options.keepalive_time.count() > 0)
            internal.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, ms(core.options.keepalive_time));
        internal.RegisterService(core.worker.get());
        if (w.kv_events) {
            core.worker_events = make_worker_events_service(w.kv_events, w.secret);
            internal.RegisterService(core.worker_events.get());
        }
        core.internal_server = internal.BuildAndStart();
        if (!core.internal_server || core.internal_port == 0) {
            core.grpc_server->Shutdown();
            return unavailable("could not listen on the internal address " + iaddress + " (address in use?)");
        }
        if (!is_loopback_host(w.host))
            log::get("server")->warn(
                "the internal port listens on {} without TLS: KV handoff control travels in plain text (the "
                "shared secret authenticates it)",
                iaddress);
        log::get("server")->info("serving moe.v1.Worker ({} role, {} KV transport) on {}", w.role, w.kv_transport,
                                 server->internal_address());
    }
    core.set_ready(true);
    auto& logger = *log::get("server");
    if (!server->tls() && !is_loopback_host(core.options.host))
        logger.warn(
            "listening on {} without TLS: requests, prompts and outputs travel in plain text; use --tls-cert and "
            "--tls-key",
            address);
    if (core.options.admin_token.empty() && !is_loopback_host(core.options.host))
        logger.warn("no --admin-token: Drain and cross-client Abort are refused to every non-loopback peer");
    core.monitor = std::thread(run_monitor, &core);
    logger.info("serving moe.v1.Inference and moe.v1.Control on {} ({}{}, admin: {})", server->address(),
                server->tls() ? "TLS" : "plaintext",
                core.options.tls_client_ca_file.empty() ? "" : ", client certificates required",
                core.options.admin_token.empty() ? "loopback peers" : "--admin-token holders");
    return server;
}

int Server::port() const {
    return core_->bound_port;
}

std::string Server::address() const {
    return core_->options.host + ":" + std::to_string(core_->bound_port);
}

std::string Server::internal_address() const {
    if (!core_->internal_server) return {};
    return core_->options.worker.host + ":" + std::to_string(core_->internal_port);
}

void Server::drain() {
    core_->drain();
}

bool Server::tls() const {
    return !core_->options.tls_cert_file.empty();
}

bool Server::draining() const {
    return core_->draining.load();
}

int64_t Server::cancel_all() {
    std::vector<std::pair<std::string, std::string>> ids;
    {
        std::lock_guard<std::mutex> lock(core_->active_mu);
        ids.assign(core_->active.begin(), core_->active.end());
    }
    int64_t n = 0;
    for (const auto& [id, ns] : ids) n += core_->engine->cancel(id, ns) ? 1 : 0;
    return n;
}

void Server::shutdown(std::chrono::milliseconds grace) {
    {
        std::lock_guard<std::mutex> lock(core_->shutdown_mu);
        if (core_->shutdown_started || !core_->grpc_server) return;
        core_->shutdown_started = true;
    }
    auto& logger = *log::get("server");
    core_->drain();
    const int64_t pending = core_->engine->load().pending;
    if (pending > 0) {
        logger.info("shutting down: waiting up to {} ms for {} pending requests", grace.count(), pending);
        if (!core_->engine->wait_idle(grace)) {
            const int64_t n = cancel_all();
            logger.warn("grace period over: cancelled {} requests", n);
            core_->engine->wait_idle(std::chrono::seconds(5));
        }
    }
    // Every request has its final event now, but a stream may still be writing it (a slow client, a
    // loaded machine): wait for the streams to end, bounded (a client that stops reading must not
    // hold shutdown), then give gRPC a moment more before it cancels what is left.
    const auto streams_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (core_->live_streams.load() > 0 && std::chrono::steady_clock::now() < streams_deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    core_->grpc_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    // Open WorkerEvents streams end now rather than at the deadline.
    if (core_->options.worker.kv_events) core_->options.worker.kv_events->close();
    if (core_->internal_server)
        core_->internal_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    logger.info("server stopped");
    {
        std::lock_guard<std::mutex> lock(core_->shutdown_mu);
        core_->shutdown_done = true;
    }
    core_->shutdown_cv.notify_all();
}

void Server::wait() {
    std::unique_lock<std::mutex> lock(core_->shutdown_mu);
    core_->shutdown_cv.wait(lock, [&] { return core_->shutdown_done; });
}

}  // namespace moe::server
