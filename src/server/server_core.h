// State shared by the services of one Server (internal to src/server).
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/metrics.h"
#include "moe/v1/control.grpc.pb.h"
#include "moe/v1/inference.grpc.pb.h"
#include "server/server.h"
#include "server/status_map.h"

namespace moe::server {

inline constexpr const char* kReadinessService = "moe.v1.Inference";

struct Server::Core {
    Engine* engine = nullptr;
    ServerOptions options;
    ModelLimits model;
    RequestLimits limits;  // the engine's own (EngineOptions::limits)
    std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
    std::atomic<bool> draining{false};
    std::atomic<bool> engine_failed{false};  // latched by the health monitor
    std::atomic<int64_t> buffered_bytes{0};  // output queued for all streams, not yet given to gRPC
    std::atomic<int64_t> live_streams{0};    // Generate reactors not yet done (shutdown waits for them)

    // The health monitor: polls the engine's health and turns readiness NOT_SERVING for good
    // when it fails.
    std::thread monitor;
    std::mutex monitor_mu;
    std::condition_variable monitor_cv;
    bool monitor_stop = false;

    // Requests submitted by this server and not finished yet, as (request_id, id_namespace):
    // for cancel_all and for an admin Abort, which reaches an id in every namespace.
    std::mutex active_mu;
    std::set<std::pair<std::string, std::string>> active;

    // The services must outlive the grpc::Server (members are destroyed in reverse order).
    // Raw (ByteBuffer) services: they parse requests themselves, so that a malformed message
    // gets INVALID_ARGUMENT with a reason instead of gRPC's empty UNIMPLEMENTED.
    std::unique_ptr<grpc::Service> inference;
    std::unique_ptr<grpc::Service> control;
    std::unique_ptr<grpc::Server> grpc_server;
    int bound_port = 0;
    // Disaggregated serving: moe.v1.Worker on its own server (the internal port).
    std::unique_ptr<grpc::Service> worker;
    std::unique_ptr<grpc::Service> worker_events;  // moe.v1.WorkerEvents, beside it
    std::unique_ptr<grpc::Server> internal_server;
    int internal_port = 0;

    // grpc_server_handled_total{grpc_type, grpc_service, grpc_method, grpc_code}: every call's
    // status at its end, under go-grpc-prometheus's name and labels (what gRPC dashboards read;
    // the error rate is the calls with grpc_code != "OK"). Registered in the engine's registry.
    // One child lookup (the family's mutex) per call, on a gRPC thread.
    metrics::Family<metrics::Counter>* handled = nullptr;
    void count_call(const char* service, const char* method, const char* type, grpc::StatusCode code) {
        if (handled != nullptr) handled->labels({type, service, method, grpc_code_label(code)}).inc();
    }

    std::mutex shutdown_mu;
    std::condition_variable shutdown_cv;
    bool shutdown_started = false;
    bool shutdown_done = false;

    void set_ready(bool ready) {
        if (grpc_server && grpc_server->GetHealthCheckService())
            grpc_server->GetHealthCheckService()->SetServingStatus(kReadinessService, ready);
    }
    bool engine_healthy() const { return options.engine_healthy ? options.engine_healthy() : engine->healthy(); }
    void drain() {
        if (draining.exchange(true)) return;
        engine->drain();
        set_ready(false);
    }
    void add_active(const std::string& id, const std::string& ns) {
        std::lock_guard<std::mutex> lock(active_mu);
        active.emplace(id, ns);
    }
    void remove_active(const std::string& id, const std::string& ns) {
        std::lock_guard<std::mutex> lock(active_mu);
        active.erase({id, ns});
    }
    // The namespaces in which `id` is pending.
    std::vector<std::string> namespaces_of(const std::string& id) {
        std::lock_guard<std::mutex> lock(active_mu);
        std::vector<std::string> out;
        for (auto it = active.lower_bound({id, std::string()}); it != active.end() && it->first == id; ++it)
            out.push_back(it->second);
        return out;
    }
};

std::unique_ptr<grpc::Service> make_inference_service(Server::Core* core);
// moe.v1.Worker (disaggregated serving), on the internal port: worker_service.cc.
StatusOr<std::unique_ptr<grpc::Service>> make_worker_service(Server::Core* core);

// Binds a GenerateResponse stream (flow control, cancel, final) to a request that `submit` hands
// to the engine with the given sink: Inference.Generate's and Worker.Decode's. On a submit
// error: null, and *error says why.
grpc::ServerWriteReactor<grpc::ByteBuffer>* make_generate_stream(
    Server::Core* core, const std::string& id, const std::string& ns,
    const std::function<StatusOr<std::string>(std::shared_ptr<RequestSink>)>& submit, grpc::Status* error);
std::unique_ptr<grpc::Service> make_control_service(Server::Core* core);

// Parses a request message received as raw bytes. INVALID_ARGUMENT naming the message type when
// the bytes are not a valid (or are a truncated) encoding of it.
template <class Message>
grpc::Status parse_request(const grpc::ByteBuffer& raw, Message* out) {
    grpc::ByteBuffer copy(raw);  // Deserialize consumes its buffer; the slices are shared, not copied
    const grpc::Status s = grpc::SerializationTraits<Message>::Deserialize(&copy, out);
    if (s.ok()) return s;
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "request: " + std::to_string(raw.Length()) + " bytes that are not a valid " +
                            Message::descriptor()->full_name() + " (malformed or truncated protobuf)");
}

template <class Message>
grpc::Status serialize_response(const Message& msg, grpc::ByteBuffer* out) {
    bool own_buffer = false;
    return grpc::SerializationTraits<Message>::Serialize(msg, out, &own_buffer);
}

}  // namespace moe::server
