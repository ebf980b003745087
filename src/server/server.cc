#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include <thread>

#include "core/logging.h"
#include "server/server_core.h"

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

Server::Server() : core_(std::make_shared<Core>()) {}

Server::~Server() {
    shutdown(std::chrono::milliseconds(0));
    stop_monitor(*core_);
}

StatusOr<std::unique_ptr<Server>> Server::start(Engine& engine, ServerOptions options) {
    if (options.port < 0 || options.port > 65535)
        return invalid_argument("port must be in [0, 65535], got " + std::to_string(options.port));
    std::unique_ptr<Server> server(new Server());
    Core& core = *server->core_;
    core.engine = &engine;
    core.options = std::move(options);
    core.model.tokenizer = engine.tokenizer();
    core.model.vocab_size = engine.config().vocab_size;
    core.model.max_model_len = engine.max_model_len();
    core.limits = engine.options().limits;
    core.inference = make_inference_service(&core);
    core.control = make_control_service(&core);

    // Both are process-wide switches that must precede the builder.
    grpc::EnableDefaultHealthCheckService(true);
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();

    const std::string host =
        core.options.host.find(':') != std::string::npos ? "[" + core.options.host + "]" : core.options.host;
    const std::string address = host + ":" + std::to_string(core.options.port);
    grpc::ServerBuilder builder;
    builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &core.bound_port);
    builder.SetMaxReceiveMessageSize(core.options.max_message_bytes);
    // gRPC sets SO_REUSEPORT by default: a second server on a busy port would then bind and
    // silently share the traffic instead of failing.
    builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    builder.RegisterService(core.inference.get());
    builder.RegisterService(core.control.get());
    core.grpc_server = builder.BuildAndStart();
    if (!core.grpc_server || core.bound_port == 0)
        return unavailable("could not listen on " + address + " (address in use or not local?)");
    core.set_ready(true);
    core.monitor = std::thread(run_monitor, &core);
    log::get("server")->info("serving moe.v1.Inference and moe.v1.Control on {}", server->address());
    return server;
}

int Server::port() const {
    return core_->bound_port;
}

std::string Server::address() const {
    return core_->options.host + ":" + std::to_string(core_->bound_port);
}

void Server::drain() {
    core_->drain();
}

bool Server::draining() const {
    return core_->draining.load();
}

int64_t Server::cancel_all() {
    std::vector<std::string> ids;
    {
        std::lock_guard<std::mutex> lock(core_->active_mu);
        ids.assign(core_->active.begin(), core_->active.end());
    }
    int64_t n = 0;
    for (const std::string& id : ids) n += core_->engine->cancel(id) ? 1 : 0;
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
    // Streams whose final message is still being written get a moment; then gRPC cancels them.
    core_->grpc_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
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
