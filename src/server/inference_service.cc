// moe.v1.Inference: Generate as a ServerWriteReactor fed by the engine through a RequestSink.
//
// Write discipline: at most one write in flight. Whoever flips `writing` to true owns the
// reactor's StartWrite/Finish until it hands ownership back, and calls them outside the lock
// (a reaction may run inline on the calling thread). Finish is called exactly once; the reactor
// is deleted in OnDone, after which the sink (which the engine may still hold) only drops
// events because `finished` is set.
#include <deque>

#include "core/log_field.h"
#include "core/logging.h"
#include "server/auth.h"
#include "server/server_core.h"
#include "server/status_map.h"

namespace moe::server {
namespace {

spdlog::logger& logger() {
    static auto l = log::get("server");
    return *l;
}

// Converts the client's gRPC deadline (system clock) to the engine's steady clock. Calls
// without a deadline carry "infinite future"; anything beyond a year is treated as none.
std::optional<std::chrono::steady_clock::time_point> engine_deadline(const grpc::CallbackServerContext* ctx) {
    const auto sys_deadline = ctx->deadline();
    const auto sys_now = std::chrono::system_clock::now();
    if (sys_deadline > sys_now + std::chrono::hours(24 * 365)) return std::nullopt;
    const auto left = std::chrono::duration_cast<std::chrono::steady_clock::duration>(sys_deadline - sys_now);
    return std::chrono::steady_clock::now() + left;
}

class GenerateReactor;

// State shared between the reactor (gRPC threads) and the sink (engine thread).
struct StreamState {
    explicit StreamState(Server::Core* c) : core(c) {}
    Server::Core* core;
    std::mutex mu;
    GenerateReactor* reactor = nullptr;  // valid while !finished
    // Messages not yet handed to gRPC, and their sizes: the bytes this stream holds for a client
    // that reads slower than it generates (bounded by stream_buffer_bytes; all streams together
    // by total_stream_buffer_bytes, counted in Core::buffered_bytes).
    std::deque<v1::GenerateResponse> queue;
    std::deque<int64_t> queue_sizes;
    int64_t queued_bytes = 0;
    bool writing = false;  // a write is in flight (ownership of the reactor's ops)
    bool current_is_final = false;
    bool final_queued = false;
    bool cancelled = false;
    bool finished = false;                   // Finish called (or about to be, by the owner)
    std::optional<grpc::Status> end_status;  // finish with this once the queue is written
    bool overflowed = false;                 // ended for not reading: later events are dropped

    void push(v1::GenerateResponse&& msg, int64_t size) {
        queue.push_back(std::move(msg));
        queue_sizes.push_back(size);
        queued_bytes += size;
        core->buffered_bytes.fetch_add(size);
    }
    v1::GenerateResponse pop() {
        v1::GenerateResponse msg = std::move(queue.front());
        queue.pop_front();
        queued_bytes -= queue_sizes.front();
        core->buffered_bytes.fetch_sub(queue_sizes.front());
        queue_sizes.pop_front();
        return msg;
    }
    void drop_queue() {
        core->buffered_bytes.fetch_sub(queued_bytes);
        queued_bytes = 0;
        queue.clear();
        queue_sizes.clear();
    }
};

class GenerateReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
public:
    GenerateReactor(Server::Core* core, std::shared_ptr<StreamState> state, std::string request_id, std::string ns)
        : core_(core), state_(std::move(state)), request_id_(std::move(request_id)), ns_(std::move(ns)) {
        core_->live_streams.fetch_add(1);
    }

    // Queues one message; starts a write if none is in flight. Any thread. Static because the
    // reactor may already be gone (the call was cancelled and finished): then it drops `msg`.
    // `then`: the status to finish with once this (final) message is written, instead of OK.
    static void enqueue(StreamState& state, v1::GenerateResponse&& msg, bool is_final,
                        std::optional<grpc::Status> then = std::nullopt) {
        std::unique_lock<std::mutex> lock(state.mu);
        if (state.finished || state.reactor == nullptr || state.overflowed) return;
        const int64_t size = static_cast<int64_t>(msg.ByteSizeLong());
        const ServerOptions& o = state.core->options;
        // Defect I (#18): a client that does not read must not make the server buffer its whole
        // output. Past the stream's (or all streams') budget, the request is cancelled, its
        // buffered output dropped, and the call ends RESOURCE_EXHAUSTED once the write in flight
        // (if any) completes. A final is never refused: it is small and ends the stream anyway.
        if (!is_final && (state.queued_bytes + size > o.stream_buffer_bytes ||
                          state.core->buffered_bytes.load() + size > o.total_stream_buffer_bytes)) {
            const bool own = state.queued_bytes + size > o.stream_buffer_bytes;
            state.overflowed = true;
            state.end_status = grpc::Status(
                grpc::StatusCode::RESOURCE_EXHAUSTED,
                own ? "the client is not reading its stream: " + std::to_string(state.queued_bytes + size) +
                          " bytes of output waiting, the per-stream budget is " +
                          std::to_string(o.stream_buffer_bytes) + " bytes (--stream-buffer-bytes)"
                    : "the server's output buffers are full (" + std::to_string(o.total_stream_buffer_bytes) +
                          " bytes, --total-stream-buffer-bytes): this stream is not being read fast enough");
            state.drop_queue();
            state.core->engine->cancel(state.reactor->request_id(), state.reactor->id_namespace());
            logger().warn("request {}: {}", log_field(state.reactor->request_id()), state.end_status->error_message());
            if (state.writing) return;  // OnWriteDone finishes: the queue is empty
            state.reactor->finish_locked(lock, *state.end_status);
            return;
        }
        if (is_final) state.final_queued = true;
        if (then) state.end_status = std::move(then);
        // A slow reader gets fewer, larger deltas rather than an ever longer queue.
        if (!is_final && !state.queue.empty() && state.queue.back().has_delta()) {
            merge_delta(state.queue.back().mutable_delta(), msg.mutable_delta());
            state.queue_sizes.back() += size;
            state.queued_bytes += size;
            state.core->buffered_bytes.fetch_add(size);
        } else {
            state.push(std::move(msg), size);
        }
        if (state.writing) return;
        // Taking ownership under the lock keeps the reactor alive: only the owner finishes it.
        state.writing = true;
        state.reactor->start_next_locked(lock);
    }

    // Ends the call with `status` (no final message) after the queued messages. Any thread.
    static void end_with(StreamState& state, const grpc::Status& status) {
        std::unique_lock<std::mutex> lock(state.mu);
        if (state.finished || state.reactor == nullptr) return;
        state.end_status = status;
        if (state.writing) return;  // OnWriteDone finishes once the queue is empty
        state.reactor->finish_locked(lock, status);
    }

    void OnWriteDone(bool ok) override {
        std::unique_lock<std::mutex> lock(state_->mu);
        if (!ok || state_->cancelled) {
            finish_locked(lock, grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled the call"));
            return;
        }
        if (state_->current_is_final) {
            finish_locked(lock, state_->end_status.value_or(grpc::Status::OK));
            return;
        }
        if (state_->queue.empty()) {
            if (state_->end_status) {
                finish_locked(lock, *state_->end_status);
                return;
            }
            state_->writing = false;
            return;
        }
        start_next_locked(lock);
    }

    void OnCancel() override {
        core_->engine->cancel(request_id_, ns_);
        std::unique_lock<std::mutex> lock(state_->mu);
        state_->cancelled = true;
        if (!state_->writing && !state_->finished)
            finish_locked(lock, grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled the call"));
    }

    void OnDone() override {
        {
            std::lock_guard<std::mutex> lock(state_->mu);
            state_->reactor = nullptr;
            state_->drop_queue();
        }
        Server::Core* core = core_;
        delete this;
        core->live_streams.fetch_sub(1);
    }

    static void merge_delta(v1::Delta* into, v1::Delta* from) {
        into->mutable_token_ids()->MergeFrom(from->token_ids());
        into->mutable_text()->append(from->text());
        for (auto& t : *from->mutable_tokens()) *into->add_tokens() = std::move(t);
    }

    // Holds ownership (writing == true); pops the next message and writes it outside the lock.
    void start_next_locked(std::unique_lock<std::mutex>& lock) {
        v1::GenerateResponse next = state_->pop();
        state_->current_is_final = next.has_final();
        lock.unlock();
        current_.Clear();
        const grpc::Status s = serialize_response(next, &current_);
        if (!s.ok()) {
            // Cannot happen for a message this server built; end the call rather than abort.
            lock.lock();
            finish_locked(lock, grpc::Status(grpc::StatusCode::INTERNAL, "could not serialize a response"));
            return;
        }
        StartWrite(&current_);
    }

    void finish_locked(std::unique_lock<std::mutex>& lock, const grpc::Status& status) {
        if (state_->finished) return;
        state_->finished = true;
        state_->writing = true;  // nobody else may start a write after Finish
        state_->drop_queue();
        lock.unlock();
        core_->count_call("moe.v1.Inference", "Generate", "server_stream", status.error_code());
        Finish(status);
    }

    const std::string& request_id() const { return request_id_; }
    const std::string& id_namespace() const { return ns_; }

private:
    Server::Core* core_;
    std::shared_ptr<StreamState> state_;
    std::string request_id_;
    std::string ns_;
    grpc::ByteBuffer current_;  // the message being written; touched only by the owner
};

// The engine's side: called on the engine thread, never blocks.
class StreamSink final : public RequestSink {
public:
    // Streams are counted by their reactor (shutdown waits for those); the sink is not a stream.
    StreamSink(Server::Core* core, std::shared_ptr<StreamState> state, std::string request_id, std::string ns)
        : core_(core), state_(std::move(state)), request_id_(std::move(request_id)), ns_(std::move(ns)) {}

    void on_delta(DeltaEvent&& delta) override {
        v1::GenerateResponse msg;
        msg.set_request_id(request_id_);
        delta_to_proto(std::move(delta), msg.mutable_delta());
        deliver(std::move(msg), false);
    }

    void on_final(FinalEvent&& final_event) override {
        core_->remove_active(request_id_, ns_);
        if (final_event.reason == FinishReason::kError)
            logger().warn("request {} failed: {}", log_field(request_id_), log_field(final_event.error.to_string()));
        // The engine ends a request whose deadline passed with kDeadline; the call then ends
        // with the status the client's own timer gives (DEADLINE_EXCEEDED), after the final
        // (FINISH_REASON_DEADLINE, with usage) for a client that still reads.
        std::optional<grpc::Status> then;
        if (final_event.reason == FinishReason::kDeadline)
            then = grpc::Status(
                grpc::StatusCode::DEADLINE_EXCEEDED,
                "the deadline passed after " + std::to_string(final_event.completion_tokens) + " generated tokens");
        v1::GenerateResponse msg;
        msg.set_request_id(request_id_);
        final_to_proto(std::move(final_event), msg.mutable_final());
        GenerateReactor::enqueue(*state_, std::move(msg), true, std::move(then));
    }

private:
    void deliver(v1::GenerateResponse&& msg, bool is_final) {
        GenerateReactor::enqueue(*state_, std::move(msg), is_final);
    }

    Server::Core* core_;
    std::shared_ptr<StreamState> state_;
    std::string request_id_;
    std::string ns_;
};

class InferenceService final : public v1::Inference::WithRawCallbackMethod_Generate<v1::Inference::Service> {
public:
    explicit InferenceService(Server::Core* core) : core_(core) {}

    grpc::ServerWriteReactor<grpc::ByteBuffer>* Generate(grpc::CallbackServerContext* ctx,
                                                         const grpc::ByteBuffer* raw) override {
        auto reject = [this](const grpc::Status& status) {
            core_->count_call("moe.v1.Inference", "Generate", "server_stream", status.error_code());
            class Rejected final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
            public:
                explicit Rejected(const grpc::Status& s) { Finish(s); }
                void OnDone() override { delete this; }
            };
            return new Rejected(status);
        };
        v1::GenerateRequest parsed;
        if (grpc::Status s = parse_request(*raw, &parsed); !s.ok()) return reject(s);
        const v1::GenerateRequest* request = &parsed;
        if (core_->draining.load())
            return reject(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is draining"));
        if (core_->engine_failed.load())
            return reject(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the engine has failed"));
        StatusOr<GenerateParams> params_or = build_generate_params(*request, core_->model, core_->limits);
        if (!params_or.ok()) {
            logger().debug("rejected request: {}", log_field(params_or.status().to_string()));
            return reject(to_grpc_status(params_or.status()));
        }
        GenerateParams params = std::move(params_or).value();
        // The one id assigner (new_request_id), called here because the sink needs the id first.
        if (params.request_id.empty()) {
            StatusOr<std::string> id_or = new_request_id();
            if (!id_or.ok()) return reject(to_grpc_status(id_or.status()));
            params.request_id = std::move(id_or).value();
        }
        params.deadline = engine_deadline(ctx);
        params.id_namespace = identify_caller(*ctx, core_->options.admin_token).id_namespace;
        const std::string id = params.request_id;
        const std::string ns = params.id_namespace;

        grpc::Status error;
        auto* reactor = make_generate_stream(
            core_, id, ns,
            [&](std::shared_ptr<RequestSink> sink) {
                return core_->engine->submit(std::move(params), std::move(sink));
            },
            &error);
        return reactor != nullptr ? reactor : reject(error);
    }

private:
    Server::Core* core_;
};

}  // namespace

grpc::ServerWriteReactor<grpc::ByteBuffer>* make_generate_stream(
    Server::Core* core, const std::string& id, const std::string& ns,
    const std::function<StatusOr<std::string>(std::shared_ptr<RequestSink>)>& submit, grpc::Status* error) {
    auto state = std::make_shared<StreamState>(core);
    auto* reactor = new GenerateReactor(core, state, id, ns);
    state->reactor = reactor;
    core->add_active(id, ns);
    StatusOr<std::string> submitted = submit(std::make_shared<StreamSink>(core, state, id, ns));
    if (!submitted.ok()) {
        core->remove_active(id, ns);
        {
            std::lock_guard<std::mutex> lock(state->mu);
            state->finished = true;
            state->reactor = nullptr;
        }
        delete reactor;  // never bound to the call, never started an op
        *error = to_grpc_status(submitted.status());
        return nullptr;
    }
    return reactor;
}

std::unique_ptr<grpc::Service> make_inference_service(Server::Core* core) {
    return std::make_unique<InferenceService>(core);
}

}  // namespace moe::server
