// moe.v1.Worker (disaggregated serving, #21): Describe, Prefill, Decode, ReleaseHandoff on the
// internal port. The flow is proto/moe/v1/worker.proto's header; the engine side is
// Engine::submit (GenerateParams::handoff) and Engine::submit_prefilled; the KV bytes move over
// a disagg::KvTransport (src/disagg/kv_transport.h).
//
// Every call needs "authorization: Bearer <--internal-secret>" (constant-time compare):
// UNAUTHENTICATED without it, PERMISSION_DENIED with a wrong one. Messages are protobuf only.
// Everything a peer sends (the prefill result, its KV descriptor) is checked before use: the
// model signature field by field (FAILED_PRECONDITION naming the field), counts by the engine,
// the KV descriptor by the transport (check_source).
#include <map>
#include <mutex>

#include "core/log_field.h"
#include "core/logging.h"
#include "disagg/kv_transport.h"
#include "moe/v1/worker.grpc.pb.h"
#include "server/auth.h"
#include "server/model_signature.h"
#include "server/server_core.h"
#include "server/status_map.h"

namespace moe::server {
namespace {

spdlog::logger& logger() {
    static auto l = log::get("server");
    return *l;
}

constexpr std::chrono::seconds kReleaseTimeout{5};

grpc::Status check_secret(const grpc::CallbackServerContext& ctx, const std::string& secret) {
    const auto& md = ctx.client_metadata();
    const auto it = md.find("authorization");
    const std::string what = "the internal worker API needs \"authorization: Bearer <--internal-secret>\"";
    if (it == md.end()) return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, what);
    const std::string_view value(it->second.data(), it->second.size());
    constexpr std::string_view kBearer = "Bearer ";
    if (secret.empty() || value.size() <= kBearer.size() || value.substr(0, kBearer.size()) != kBearer ||
        !constant_time_equals(value.substr(kBearer.size()), secret))
        return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, what + ": wrong secret");
    return grpc::Status::OK;
}

// The decode side's clients of prefill workers (ReleaseHandoff), one channel per address.
class PeerClients {
public:
    explicit PeerClients(std::string secret) : secret_(std::move(secret)) {}

    Status release(const std::string& address, const std::string& handoff_id) {
        std::shared_ptr<v1::Worker::Stub> stub;
        {
            std::lock_guard<std::mutex> lock(mu_);
            auto& s = stubs_[address];
            if (!s) s = v1::Worker::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
            stub = s;
        }
        grpc::ClientContext ctx;
        ctx.AddMetadata("authorization", "Bearer " + secret_);
        ctx.set_deadline(std::chrono::system_clock::now() + kReleaseTimeout);
        v1::ReleaseHandoffRequest req;
        req.set_handoff_id(handoff_id);
        v1::ReleaseHandoffResponse resp;
        const grpc::Status s = stub->ReleaseHandoff(&ctx, req, &resp);
        if (!s.ok())
            return unavailable("ReleaseHandoff to the prefill worker " + address + " failed: " + s.error_message());
        if (!resp.released())
            return unavailable("the prefill worker's lease " + log_field(handoff_id) +
                               " had ended (expired or released) before the KV was acknowledged");
        return ok_status();
    }

private:
    std::string secret_;
    std::mutex mu_;
    std::map<std::string, std::shared_ptr<v1::Worker::Stub>> stubs_;
};

v1::ModelSignature signature_of(const Server::Core& core) {
    const Engine& e = *core.engine;
    const ModelConfig& c = e.config();
    const KvCache& kv = e.kv_cache();
    v1::ModelSignature s;
    s.set_model_name(e.options().metrics_model_name);
    s.set_architecture(core.options.worker.architecture.empty() ? c.model_type : core.options.worker.architecture);
    s.set_num_layers(static_cast<int32_t>(c.num_layers));
    s.set_num_kv_heads(static_cast<int32_t>(kv.layout().num_heads));
    s.set_head_dim(static_cast<int32_t>(kv.layout().head_dim));
    s.set_kv_elems_per_token_per_layer(kv.layout().elements_per_token());
    s.set_kv_dtype(dtype_name(kv.dtype()));
    s.set_block_size(static_cast<int32_t>(kv.block_size()));
    s.set_vocab_size(static_cast<int32_t>(c.vocab_size));
    s.set_weights_fingerprint(core.options.worker.weights_fingerprint);
    return s;
}

// Empty when equal, else "prefill.model.<field> is X, this worker's is Y" for the first field
// that differs.
std::string signature_mismatch(const v1::ModelSignature& theirs, const v1::ModelSignature& ours) {
    const std::optional<SignatureDifference> d = first_signature_difference(theirs, ours);
    if (!d) return {};
    return "prefill.model." + d->field + " is " + d->a + ", this worker's is " + d->b;
}

void token_to_proto(const TokenEvent& t, v1::GeneratedToken* out) {
    out->set_token_id(t.token);
    out->set_logprob(t.logprob);
    for (const TokenLogprob& alt : t.top) {
        v1::TokenLogprob* p = out->add_top();
        p->set_token_id(alt.token);
        p->set_logprob(alt.logprob);
    }
}

// ---- Prefill: a unary call finished by the engine thread (handoff or final) ---------------------

struct PrefillState {
    std::mutex mu;
    grpc::ServerUnaryReactor* reactor = nullptr;  // null once done
    v1::PrefillResult* result = nullptr;          // gRPC's, valid until Finish
    bool finished = false;                        // Finish called
    bool cancelled = false;
    bool handed_off = false;
    std::string handoff_id;
};

class PrefillReactor final : public grpc::ServerUnaryReactor {
public:
    PrefillReactor(Server::Core* core, std::shared_ptr<PrefillState> state, std::string id, std::string ns)
        : core_(core), state_(std::move(state)), id_(std::move(id)), ns_(std::move(ns)) {}
    void OnCancel() override {
        core_->engine->cancel(id_, ns_);
        std::lock_guard<std::mutex> lock(state_->mu);
        state_->cancelled = true;
        // Handed off but the router will never see the result: free the lease now.
        if (state_->handed_off) core_->engine->release_handoff(state_->handoff_id);
    }
    void OnDone() override {
        {
            std::lock_guard<std::mutex> lock(state_->mu);
            state_->reactor = nullptr;
            state_->result = nullptr;
        }
        delete this;
    }

private:
    Server::Core* core_;
    std::shared_ptr<PrefillState> state_;
    std::string id_, ns_;
};

class PrefillSink final : public RequestSink {
public:
    PrefillSink(Server::Core* core, std::shared_ptr<PrefillState> state, std::shared_ptr<disagg::KvTransport> transport,
                v1::ModelSignature signature)
        : core_(core), state_(std::move(state)), transport_(std::move(transport)), signature_(std::move(signature)) {}

    void on_delta(DeltaEvent&& d) override {
        for (TokenEvent& t : d.tokens) tokens_.push_back(std::move(t));
        text_ += d.text;
    }

    void on_final(FinalEvent&& f) override {
        grpc::Status status = grpc::Status::OK;
        if (f.reason == FinishReason::kError)
            status = to_grpc_status(f.error);
        else if (f.reason == FinishReason::kCancelled)
            status = grpc::Status(grpc::StatusCode::CANCELLED, "the prefill request was cancelled");
        else if (f.reason == FinishReason::kDeadline)
            status = grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "the deadline passed during prefill");
        std::lock_guard<std::mutex> lock(state_->mu);
        if (state_->finished || state_->reactor == nullptr) return;
        if (status.ok()) {
            v1::PrefillResult& r = *state_->result;
            r.set_handoff_id(state_->handoff_id);
            r.set_finished(true);
            if (!tokens_.empty()) token_to_proto(tokens_.front(), r.mutable_first_token());
            r.set_text(text_);
            r.set_queue_seconds(f.queue_seconds);
            r.set_ttft_seconds(f.ttft_seconds);
            r.set_cached_prompt_tokens(f.cached_prompt_tokens);
            *r.mutable_model() = signature_;
            final_to_proto(std::move(f), r.mutable_final());
        }
        finish_locked(status);
    }

    void on_handoff(HandoffEvent&& ev) override {
        StatusOr<disagg::KvSourceDesc> kv = transport_->describe(ev.block_ids);
        std::lock_guard<std::mutex> lock(state_->mu);
        state_->handed_off = true;
        if (state_->finished || state_->reactor == nullptr || state_->cancelled || !kv.ok()) {
            core_->engine->release_handoff(ev.handoff_id);
            if (!kv.ok()) finish_locked(to_grpc_status(kv.status()));
            return;
        }
        v1::PrefillResult& r = *state_->result;
        r.set_handoff_id(ev.handoff_id);
        r.set_finished(false);
        token_to_proto(ev.first_token, r.mutable_first_token());
        r.mutable_prompt_token_ids()->Add(ev.prompt_ids.begin(), ev.prompt_ids.end());
        r.set_seed(ev.seed);
        r.set_random_draws(ev.random_draws);
        r.set_cached_prompt_tokens(ev.cached_prompt_tokens);
        r.set_queue_seconds(ev.queue_seconds);
        r.set_ttft_seconds(ev.ttft_seconds);
        r.set_lease_seconds(ev.lease_seconds);
        *r.mutable_model() = signature_;
        v1::KvSource* k = r.mutable_kv();
        k->set_transport(kv->transport);
        k->set_endpoint(kv->endpoint);
        k->mutable_block_ids()->Add(kv->block_ids.begin(), kv->block_ids.end());
        k->set_region_bytes(kv->region_bytes);
        k->set_regions_per_block(kv->regions_per_block);
        k->mutable_region_base()->Add(kv->region_base.begin(), kv->region_base.end());
        for (const Sha256Digest& h : ev.block_hashes)
            k->add_block_hashes(std::string(reinterpret_cast<const char*>(h.data()), h.size()));
        k->set_num_blocks(kv->num_blocks);
        for (const std::string& key : kv->region_keys) k->add_region_keys(key);
        finish_locked(grpc::Status::OK);
    }

private:
    void finish_locked(const grpc::Status& status) {
        if (state_->finished || state_->reactor == nullptr) return;
        state_->finished = true;
        core_->count_call("moe.v1.Worker", "Prefill", "unary", status.error_code());
        state_->reactor->Finish(status);
    }

    Server::Core* core_;
    std::shared_ptr<PrefillState> state_;
    std::shared_ptr<disagg::KvTransport> transport_;
    v1::ModelSignature signature_;
    std::vector<TokenEvent> tokens_;  // engine thread only
    std::string text_;
};

std::optional<std::chrono::steady_clock::time_point> deadline_of(const grpc::CallbackServerContext* ctx) {
    const auto sys_deadline = ctx->deadline();
    const auto sys_now = std::chrono::system_clock::now();
    if (sys_deadline > sys_now + std::chrono::hours(24 * 365)) return std::nullopt;
    return std::chrono::steady_clock::now() +
           std::chrono::duration_cast<std::chrono::steady_clock::duration>(sys_deadline - sys_now);
}

class WorkerService final : public v1::Worker::WithRawCallbackMethod_Decode<v1::Worker::CallbackService> {
public:
    WorkerService(Server::Core* core, std::shared_ptr<disagg::KvTransport> transport)
        : core_(core),
          transport_(std::move(transport)),
          peers_(std::make_shared<PeerClients>(core->options.worker.secret)),
          signature_(signature_of(*core)) {}

    grpc::ServerUnaryReactor* Describe(grpc::CallbackServerContext* ctx, const v1::DescribeRequest*,
                                       v1::WorkerInfo* info) override {
        auto* reactor = ctx->DefaultReactor();
        if (grpc::Status s = check_secret(*ctx, secret()); !s.ok()) return finish(reactor, "Describe", s);
        const std::string& role = core_->options.worker.role;
        info->set_role(role == "prefill"  ? v1::WORKER_ROLE_PREFILL
                       : role == "decode" ? v1::WORKER_ROLE_DECODE
                                          : v1::WORKER_ROLE_AGGREGATED);
        *info->mutable_model() = signature_;
        info->add_kv_transports(transport_->name());
        const EngineLoad l = core_->engine->load();
        info->set_kv_blocks_total(l.kv_blocks_total);
        info->set_kv_blocks_free(l.kv_blocks_free);
        info->set_num_running(static_cast<int32_t>(l.running));
        info->set_num_waiting(static_cast<int32_t>(l.waiting));
        info->set_public_address(core_->options.host + ":" + std::to_string(core_->bound_port));
        info->set_internal_address(core_->options.worker.host + ":" + std::to_string(core_->internal_port));
        return finish(reactor, "Describe", grpc::Status::OK);
    }

    grpc::ServerUnaryReactor* ReleaseHandoff(grpc::CallbackServerContext* ctx, const v1::ReleaseHandoffRequest* req,
                                             v1::ReleaseHandoffResponse* resp) override {
        auto* reactor = ctx->DefaultReactor();
        if (grpc::Status s = check_secret(*ctx, secret()); !s.ok()) return finish(reactor, "ReleaseHandoff", s);
        resp->set_released(core_->engine->release_handoff(req->handoff_id()));
        return finish(reactor, "ReleaseHandoff", grpc::Status::OK);
    }

    grpc::ServerUnaryReactor* Prefill(grpc::CallbackServerContext* ctx, const v1::PrefillRequest* req,
                                      v1::PrefillResult* result) override {
        auto reject = [&](const grpc::Status& s) { return finish(ctx->DefaultReactor(), "Prefill", s); };
        if (grpc::Status s = check_secret(*ctx, secret()); !s.ok()) return reject(s);
        const auto& w = core_->options.worker;
        if (w.role == "decode")
            return reject(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                       "this worker's role is decode: Prefill goes to a prefill or aggregated worker"));
        if (core_->draining.load())
            return reject(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is draining"));
        if (req->handoff_id().empty() || req->handoff_id().size() > 128)
            return reject(
                grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                             "handoff_id must be 1 to 128 bytes, got " + std::to_string(req->handoff_id().size())));
        const double max_lease = std::chrono::duration<double>(w.max_lease).count();
        if (!(req->lease_seconds() >= 0 && req->lease_seconds() <= max_lease))
            return reject(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "lease_seconds must be in [0, " +
                                                                               std::to_string(max_lease) + "], got " +
                                                                               std::to_string(req->lease_seconds())));
        StatusOr<GenerateParams> params_or = build_generate_params(req->request(), core_->model, core_->limits);
        if (!params_or.ok()) return reject(to_grpc_status(params_or.status()));
        GenerateParams params = std::move(params_or).value();
        if (params.request_id.empty()) {
            StatusOr<std::string> id = new_request_id();
            if (!id.ok()) return reject(to_grpc_status(id.status()));
            params.request_id = std::move(id).value();
        }
        params.deadline = deadline_of(ctx);
        params.id_namespace = "worker:" + identify_caller(*ctx, core_->options.admin_token).id_namespace;
        const auto lease = req->lease_seconds() > 0
                               ? std::chrono::milliseconds(static_cast<int64_t>(req->lease_seconds() * 1000))
                               : w.lease;
        params.handoff = HandoffRequest{.handoff_id = req->handoff_id(), .lease = lease};

        auto state = std::make_shared<PrefillState>();
        state->handoff_id = req->handoff_id();
        state->result = result;
        auto* reactor = new PrefillReactor(core_, state, params.request_id, params.id_namespace);
        {
            std::lock_guard<std::mutex> lock(state->mu);
            state->reactor = reactor;
        }
        StatusOr<std::string> submitted = core_->engine->submit(
            std::move(params), std::make_shared<PrefillSink>(core_, state, transport_, signature_));
        if (!submitted.ok()) {
            std::lock_guard<std::mutex> lock(state->mu);
            state->finished = true;
            core_->count_call("moe.v1.Worker", "Prefill", "unary", to_grpc_status(submitted.status()).error_code());
            reactor->Finish(to_grpc_status(submitted.status()));
        }
        return reactor;
    }

    grpc::ServerWriteReactor<grpc::ByteBuffer>* Decode(grpc::CallbackServerContext* ctx,
                                                       const grpc::ByteBuffer* raw) override {
        auto reject = [this](const grpc::Status& status) {
            core_->count_call("moe.v1.Worker", "Decode", "server_stream", status.error_code());
            class Rejected final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
            public:
                explicit Rejected(const grpc::Status& s) { Finish(s); }
                void OnDone() override { delete this; }
            };
            return new Rejected(status);
        };
        if (grpc::Status s = check_secret(*ctx, secret()); !s.ok()) return reject(s);
        v1::DecodeRequest req;
        if (grpc::Status s = parse_request(*raw, &req); !s.ok()) return reject(s);
        if (core_->options.worker.role == "prefill")
            return reject(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                       "this worker's role is prefill: Decode goes to a decode or aggregated worker"));
        if (core_->draining.load())
            return reject(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is draining"));
        if (core_->engine_failed.load())
            return reject(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the engine has failed"));
        const v1::PrefillResult& pr = req.prefill();
        auto precondition = [&](const std::string& why) {
            return reject(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, why));
        };
        if (pr.finished()) return precondition("prefill.finished: the request ended at its first token");
        if (std::string why = signature_mismatch(pr.model(), signature_); !why.empty()) return precondition(why);
        if (pr.kv().transport() != transport_->name())
            return precondition("prefill.kv.transport is \"" + log_field(pr.kv().transport()) +
                                "\", this worker pulls with \"" + transport_->name() + "\"");
        if (req.prefill_worker().empty())
            return reject(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "prefill_worker: empty"));
        if (pr.handoff_id().empty())
            return reject(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "prefill.handoff_id: empty"));
        // The prompt as the prefill worker tokenized it: never tokenized again here.
        v1::GenerateRequest request = req.request();
        request.mutable_token_ids()->mutable_ids()->Assign(pr.prompt_token_ids().begin(), pr.prompt_token_ids().end());
        StatusOr<GenerateParams> params_or = build_generate_params(request, core_->model, core_->limits);
        if (!params_or.ok()) return reject(to_grpc_status(params_or.status()));
        PrefilledParams pp;
        pp.params = std::move(params_or).value();
        if (pp.params.request_id.empty()) {
            StatusOr<std::string> id = new_request_id();
            if (!id.ok()) return reject(to_grpc_status(id.status()));
            pp.params.request_id = std::move(id).value();
        }
        pp.params.deadline = deadline_of(ctx);
        pp.params.id_namespace = "worker:" + identify_caller(*ctx, core_->options.admin_token).id_namespace;
        const v1::GeneratedToken& ft = pr.first_token();
        pp.first_token.token = ft.token_id();
        pp.first_token.logprob = ft.logprob();
        if (ft.top_size() > core_->limits.max_logprobs)
            return reject(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                       "prefill.first_token.top has " + std::to_string(ft.top_size()) +
                                           " entries, the limit is " + std::to_string(core_->limits.max_logprobs)));
        for (const auto& t : ft.top()) pp.first_token.top.push_back({.token = t.token_id(), .logprob = t.logprob()});
        pp.seed = pr.seed();
        pp.random_draws = pr.random_draws();
        pp.cached_prompt_tokens = pr.cached_prompt_tokens();
        pp.queue_seconds = pr.queue_seconds();
        pp.ttft_seconds = pr.ttft_seconds();
        pp.num_source_blocks = pr.kv().block_ids_size();
        const double lease = std::min(std::max(pr.lease_seconds(), 0.0),
                                      std::chrono::duration<double>(core_->options.worker.max_lease).count());
        pp.room_deadline =
            std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(lease * 1000));
        disagg::KvSourceDesc desc;
        const v1::KvSource& k = pr.kv();
        desc.transport = k.transport();
        desc.endpoint = k.endpoint();
        desc.region_keys.assign(k.region_keys().begin(), k.region_keys().end());
        desc.block_ids.assign(k.block_ids().begin(), k.block_ids().end());
        desc.region_bytes = k.region_bytes();
        desc.regions_per_block = k.regions_per_block();
        desc.region_base.assign(k.region_base().begin(), k.region_base().end());
        desc.num_blocks = k.num_blocks();
        pp.pull = [transport = transport_, desc = std::move(desc)](
                      std::span<const int32_t> src, std::span<const int32_t> dst, const std::atomic<bool>& cancelled) {
            return transport->pull(desc, src, dst, cancelled);
        };
        pp.release = [peers = peers_, address = req.prefill_worker(), id = pr.handoff_id()] {
            return peers->release(address, id);
        };
        const std::string id = pp.params.request_id;
        const std::string ns = pp.params.id_namespace;
        grpc::Status error;
        auto* reactor = make_generate_stream(
            core_, id, ns,
            [&](std::shared_ptr<RequestSink> sink) {
                return core_->engine->submit_prefilled(std::move(pp), std::move(sink));
            },
            &error);
        return reactor != nullptr ? reactor : reject(error);
    }

private:
    const std::string& secret() const { return core_->options.worker.secret; }
    grpc::ServerUnaryReactor* finish(grpc::ServerUnaryReactor* reactor, const char* method, const grpc::Status& s) {
        core_->count_call("moe.v1.Worker", method, "unary", s.error_code());
        reactor->Finish(s);
        return reactor;
    }

    Server::Core* core_;
    std::shared_ptr<disagg::KvTransport> transport_;
    std::shared_ptr<PeerClients> peers_;
    v1::ModelSignature signature_;
};

}  // namespace

StatusOr<std::unique_ptr<grpc::Service>> make_worker_service(Server::Core* core) {
    const auto& w = core->options.worker;
    if (w.role != "prefill" && w.role != "decode" && w.role != "aggregated")
        return invalid_argument("--role must be prefill, decode or aggregated, got " + log_field(w.role));
    if (w.secret.empty())
        return invalid_argument("the internal worker port needs --internal-secret (or MOE_INTERNAL_SECRET)");
    if (w.lease <= std::chrono::milliseconds(0) || w.lease > w.max_lease)
        return invalid_argument("--handoff-lease-seconds must be in (0, " +
                                std::to_string(std::chrono::duration<double>(w.max_lease).count()) + "]");
    std::unique_ptr<disagg::KvTransport> transport;
    if (w.kv_transport == "ucx") {
        MOE_ASSIGN_OR_RETURN(transport, disagg::make_ucx_transport(core->engine->kv_cache()));
    } else if (w.kv_transport == "inproc") {
        MOE_ASSIGN_OR_RETURN(
            transport, disagg::make_inproc_transport(core->engine->kv_cache(),
                                                     "worker-" + std::to_string(reinterpret_cast<uintptr_t>(core))));
    } else {
        return invalid_argument("--kv-transport must be ucx or inproc, got " + log_field(w.kv_transport));
    }
    return std::unique_ptr<grpc::Service>(
        std::make_unique<WorkerService>(core, std::shared_ptr<disagg::KvTransport>(std::move(transport))));
}

}  // namespace moe::server
