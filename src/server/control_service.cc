// moe.v1.Control: model and server facts, load, metrics, abort, drain. Each handler answers at
// once.
//
// Who may call what (src/server/auth.h defines admin and namespaces): GetModelInfo, GetLoad,
// GetMetrics: anyone. GetServerInfo: anyone, but filesystem paths (model directory, TLS files) only for
// admin. Abort: anyone, reaching only the caller's own namespace; admin reaches the id in every
// namespace. Drain: admin only.
#include <filesystem>

#include "core/log_field.h"
#include "core/logging.h"
#include "server/auth.h"
#include "server/request_builder.h"
#include "server/server_core.h"

namespace moe::server {
namespace {

using RawControl = v1::Control::WithRawCallbackMethod_GetModelInfo<
    v1::Control::WithRawCallbackMethod_GetServerInfo<v1::Control::WithRawCallbackMethod_GetLoad<
        v1::Control::WithRawCallbackMethod_Abort<v1::Control::WithRawCallbackMethod_Drain<
            v1::Control::WithRawCallbackMethod_GetMetrics<v1::Control::Service>>>>>>;

class ControlService final : public RawControl {
public:
    explicit ControlService(Server::Core* core) : core_(core) {}

    grpc::ServerUnaryReactor* GetMetrics(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                         grpc::ByteBuffer* out) override {
        return unary<v1::GetMetricsRequest, v1::MetricsText>("GetMetrics", ctx, in, out, &ControlService::get_metrics);
    }
    grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                           grpc::ByteBuffer* out) override {
        return unary<v1::GetModelInfoRequest, v1::ModelInfo>("GetModelInfo", ctx, in, out,
                                                             &ControlService::get_model_info);
    }
    grpc::ServerUnaryReactor* GetServerInfo(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                            grpc::ByteBuffer* out) override {
        return unary<v1::GetServerInfoRequest, v1::ServerInfo>("GetServerInfo", ctx, in, out,
                                                               &ControlService::get_server_info);
    }
    grpc::ServerUnaryReactor* GetLoad(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                      grpc::ByteBuffer* out) override {
        return unary<v1::GetLoadRequest, v1::Load>("GetLoad", ctx, in, out, &ControlService::get_load);
    }
    grpc::ServerUnaryReactor* Abort(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                    grpc::ByteBuffer* out) override {
        return unary<v1::AbortRequest, v1::AbortResponse>("Abort", ctx, in, out, &ControlService::abort);
    }
    grpc::ServerUnaryReactor* Drain(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                    grpc::ByteBuffer* out) override {
        return unary<v1::DrainRequest, v1::DrainResponse>("Drain", ctx, in, out, &ControlService::drain);
    }

private:
    // Parses the request, runs the handler, serializes its answer.
    template <class Req, class Resp>
    grpc::ServerUnaryReactor* unary(const char* method, grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                    grpc::ByteBuffer* out,
                                    grpc::Status (ControlService::*handler)(grpc::CallbackServerContext*, const Req*,
                                                                            Resp*)) {
        Req req;
        grpc::Status s = parse_request(*in, &req);
        if (s.ok()) {
            Resp resp;
            s = (this->*handler)(ctx, &req, &resp);
            if (s.ok()) s = serialize_response(resp, out);
        }
        core_->count_call("moe.v1.Control", method, "unary", s.error_code());
        return finish(ctx, s);
    }

    grpc::Status get_metrics(grpc::CallbackServerContext*, const v1::GetMetricsRequest*, v1::MetricsText* out) {
        out->set_text(metrics::render_text(core_->engine->metrics()));
        out->set_content_type(metrics::kTextContentType);
        return grpc::Status::OK;
    }

    grpc::Status get_model_info(grpc::CallbackServerContext* ctx, const v1::GetModelInfoRequest*, v1::ModelInfo* out) {
        const Engine& engine = *core_->engine;
        const ModelConfig& c = engine.config();
        // The model directory is a filesystem path: only its last component for non-admin callers.
        const bool admin = identify_caller(*ctx, core_->options.admin_token).admin;
        out->set_name(admin ? core_->options.model_name
                            : std::filesystem::path(core_->options.model_name).filename().string());
        out->set_architecture(c.architecture);
        out->set_family(family_name(c.family));
        out->set_num_layers(c.num_layers);
        out->set_hidden_size(c.hidden_size);
        out->set_num_experts(c.num_experts);
        out->set_num_experts_per_tok(c.num_experts_per_tok);
        out->set_vocab_size(c.vocab_size);
        out->set_max_position_embeddings(c.max_position_embeddings);
        out->set_max_model_len(engine.max_model_len());
        out->set_dtype(core_->options.dtype);
        out->set_has_tokenizer(engine.tokenizer() != nullptr);
        for (int64_t id : c.eos_token_ids) out->add_eos_token_ids(id);
        out->set_bos_token_id(c.bos_token_id);
        out->set_num_heads(c.num_heads);
        out->set_num_kv_heads(c.num_kv_heads);
        out->set_head_dim(c.head_dim);
        return grpc::Status::OK;
    }

    grpc::Status get_server_info(grpc::CallbackServerContext* ctx, const v1::GetServerInfoRequest*,
                                 v1::ServerInfo* out) {
        out->set_version(MOESERVE_VERSION);
        out->set_backend(core_->options.backend);
        out->set_threads(core_->options.threads);
        const bool admin = identify_caller(*ctx, core_->options.admin_token).admin;
        for (const auto& [k, v] : core_->options.config)
            (*out->mutable_options())[k] = admin || !is_path_option(k) ? v : "(hidden: admin only)";
        out->set_uptime_seconds(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - core_->started).count());
        out->set_draining(core_->draining.load());
        const ServerOptions::ExpertParallelInfo& ep = core_->options.expert_parallel;
        v1::ExpertParallelInfo* epo = out->mutable_expert_parallel();
        epo->set_rank(ep.rank);
        epo->set_world_size(ep.world_size);
        epo->set_comm(ep.comm);
        for (const auto& [layer, experts] : ep.layer_experts) {
            v1::LayerExperts* le = epo->add_layers();
            le->set_layer(static_cast<int32_t>(layer));
            le->mutable_experts()->Add(experts.begin(), experts.end());
        }
        return grpc::Status::OK;
    }

    grpc::Status get_load(grpc::CallbackServerContext*, const v1::GetLoadRequest*, v1::Load* out) {
        const EngineLoad l = core_->engine->load();
        out->set_num_waiting(l.waiting);
        out->set_num_running(l.running);
        out->set_num_pending(l.pending);
        out->set_kv_blocks_total(l.kv_blocks_total);
        out->set_kv_blocks_free(l.kv_blocks_free);
        out->set_kv_blocks_cached(l.kv_blocks_cached);
        out->set_kv_block_size(l.kv_block_size);
        out->set_num_preemptions(l.num_preemptions);
        out->set_num_steps(l.steps);
        out->set_num_generated_tokens(l.generated_tokens);
        out->set_draining(l.draining || core_->draining.load());
        out->set_failed(l.failed || core_->engine_failed.load());
        for (size_t layer = 0; layer < l.expert_load.size(); ++layer) {
            if (l.expert_load[layer].empty()) continue;
            v1::ExpertLoad* el = out->add_expert_load();
            el->set_layer(static_cast<int32_t>(layer));
            el->mutable_tokens()->Add(l.expert_load[layer].begin(), l.expert_load[layer].end());
        }
        return grpc::Status::OK;
    }

    grpc::Status abort(grpc::CallbackServerContext* ctx, const v1::AbortRequest* request, v1::AbortResponse* out) {
        const Caller caller = identify_caller(*ctx, core_->options.admin_token);
        const std::string& id = request->request_id();
        if (const int64_t bad = first_invalid_utf8(id); bad >= 0)
            return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                "request_id: invalid UTF-8 at byte " + std::to_string(bad));
        if (id.size() > core_->limits.max_request_id_bytes)
            return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                "request_id is " + std::to_string(id.size()) + " bytes, the limit is " +
                                    std::to_string(core_->limits.max_request_id_bytes));
        bool aborted = core_->engine->cancel(id, caller.id_namespace);
        if (caller.admin)
            for (const std::string& ns : core_->namespaces_of(id)) aborted |= core_->engine->cancel(id, ns);
        log::get("server")->info("abort {} by {}{}: {}", log_field(id), log_field(caller.id_namespace),
                                 caller.admin ? " (admin)" : "", aborted ? "cancelled" : "not pending");
        out->set_aborted(aborted);
        return grpc::Status::OK;
    }

    grpc::Status drain(grpc::CallbackServerContext* ctx, const v1::DrainRequest*, v1::DrainResponse* out) {
        const Caller caller = identify_caller(*ctx, core_->options.admin_token);
        if (!caller.admin) {
            log::get("server")->warn("Control.Drain refused to {}", log_field(caller.id_namespace));
            return admin_required(caller, "Control.Drain");
        }
        out->set_num_pending(core_->engine->load().pending);
        log::get("server")->info("drain requested over Control.Drain by {} ({} pending)",
                                 log_field(caller.id_namespace), out->num_pending());
        core_->drain();
        return grpc::Status::OK;
    }

    static grpc::ServerUnaryReactor* finish(grpc::CallbackServerContext* ctx, const grpc::Status& status) {
        grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
        r->Finish(status);
        return r;
    }
    // Options whose values are filesystem paths.
    static bool is_path_option(const std::string& key) {
        return key == "model" || key == "tls_cert" || key == "tls_key" || key == "tls_client_ca" ||
               key == "ep_placement";
    }

    Server::Core* core_;
};

}  // namespace

std::unique_ptr<grpc::Service> make_control_service(Server::Core* core) {
    return std::make_unique<ControlService>(core);
}

}  // namespace moe::server
