#include "router/router.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>

#include "core/log_field.h"
#include "core/logging.h"
#include "engine/request_limits.h"
#include "model/config.h"
#include "moe/tokenizer.h"
#include "router/worker_client.h"
#include "server/auth.h"
#include "server/model_signature.h"
#include "server/request_builder.h"
#include "server/status_map.h"
#include "template/chat_template.h"

namespace moe::router {
namespace {

namespace fs = std::filesystem;

spdlog::logger& logger() {
    static auto l = log::get("router");
    return *l;
}

// A status the router may retry on another worker: the worker failed, not the request.
bool worker_failure(grpc::StatusCode c) {
    return c == grpc::StatusCode::UNAVAILABLE || c == grpc::StatusCode::UNKNOWN || c == grpc::StatusCode::INTERNAL ||
           c == grpc::StatusCode::ABORTED;
}

grpc::Status annotate(const grpc::Status& s, const std::string& what) {
    return grpc::Status(s.error_code(), what + ": " + s.error_message());
}

// One request in flight: what Control.Abort needs to reach it.
struct CallState {
    std::mutex mu;
    grpc::ClientContext* current = nullptr;  // the worker call under way
    bool aborted = false;
    void set(grpc::ClientContext* c) {
        std::lock_guard<std::mutex> lock(mu);
        current = c;
        if (aborted && c) c->TryCancel();
    }
    void abort() {
        std::lock_guard<std::mutex> lock(mu);
        aborted = true;
        if (current) current->TryCancel();
    }
    bool is_aborted() {
        std::lock_guard<std::mutex> lock(mu);
        return aborted;
    }
};

}  // namespace

struct Router::Impl {
    RouterOptions options;
    ModelConfig config;
    std::unique_ptr<Tokenizer> tokenizer;
    std::shared_ptr<const tmpl::ChatTemplate> chat_template;
    server::ModelLimits model_limits;
    RequestLimits limits;
    std::string served_name;

    std::vector<std::unique_ptr<WorkerClient>> prefill, decode, aggregated;
    int64_t block_size = 16;
    std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();

    std::atomic<bool> draining{false};
    std::atomic<int64_t> num_requests{0}, num_retries{0}, num_failed{0};
    std::mutex active_mu;
    std::condition_variable active_cv;
    std::map<std::pair<std::string, std::string>, std::shared_ptr<CallState>> active;  // (ns, id)

    std::unique_ptr<grpc::Service> inference_service, control_service;
    std::unique_ptr<grpc::Server> server;
    int bound_port = 0;
    std::once_flag shutdown_once;

    Status connect_workers();
    grpc::Status generate(grpc::ServerContext* ctx, const v1::GenerateRequest& req,
                          grpc::ServerWriter<v1::GenerateResponse>* writer);
    grpc::Status generate_disaggregated(grpc::ServerContext* ctx, v1::GenerateRequest req, const GenerateParams& p,
                                        std::span<const Sha256Digest> hashes, const std::string& client_id,
                                        CallState& call, grpc::ServerWriter<v1::GenerateResponse>* writer);
    grpc::Status generate_aggregated(grpc::ServerContext* ctx, const v1::GenerateRequest& req,
                                     std::span<const Sha256Digest> hashes, const std::string& client_id,
                                     CallState& call, grpc::ServerWriter<v1::GenerateResponse>* writer);
    void release_handoff(WorkerClient& p, const std::string& handoff_id);
    void fill_load(v1::Load* out);
};

namespace {

// Writes the response of a request that ended at its first token on the prefill worker.
bool write_finished_at_first(const v1::PrefillResult& r, const std::string& client_id,
                             grpc::ServerWriter<v1::GenerateResponse>* writer) {
    if (r.has_first_token()) {
        v1::GenerateResponse d;
        d.set_request_id(client_id);
        v1::Delta* delta = d.mutable_delta();
        delta->add_token_ids(r.first_token().token_id());
        *delta->add_tokens() = r.first_token();
        // The prefill worker detokenized it (stop strings withheld): one side owns the text.
        delta->set_text(r.text());
        if (!writer->Write(d)) return false;
    }
    v1::GenerateResponse f;
    f.set_request_id(client_id);
    *f.mutable_final() = r.final();
    return writer->Write(f);
}

}  // namespace

void Router::Impl::release_handoff(WorkerClient& p, const std::string& handoff_id) {
    grpc::ClientContext ctx;
    p.authorize(ctx);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    v1::ReleaseHandoffRequest req;
    req.set_handoff_id(handoff_id);
    v1::ReleaseHandoffResponse resp;
    const grpc::Status s = p.worker()->ReleaseHandoff(&ctx, req, &resp);
    if (!s.ok())
        logger().debug("ReleaseHandoff {} on {}: {} (its lease frees the blocks)", handoff_id, p.address(),
                       s.error_message());
}

grpc::Status Router::Impl::generate_disaggregated(grpc::ServerContext* ctx, v1::GenerateRequest req,
                                                  const GenerateParams& p, std::span<const Sha256Digest> hashes,
                                                  const std::string& client_id, CallState& call,
                                                  grpc::ServerWriter<v1::GenerateResponse>* writer) {
    const int64_t prompt_blocks = static_cast<int64_t>(hashes.size());
    const int64_t need_blocks =
        (static_cast<int64_t>(p.prompt_ids.size()) + std::max<int64_t>(p.stopping.max_tokens, 1) + block_size - 1) /
        block_size;

    auto states = [&](const std::vector<std::unique_ptr<WorkerClient>>& ws) {
        std::vector<WorkerState> out;
        for (const auto& w : ws) out.push_back(w->state(hashes));
        return out;
    };
    const std::vector<WorkerState> dstates = states(decode);
    const int d_idx = pick_decode(dstates, need_blocks);
    if (d_idx < 0) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "no decode worker is reachable");
    WorkerClient& dw = *decode[static_cast<size_t>(d_idx)];

    std::vector<int> tried;
    v1::PrefillResult result;
    WorkerClient* pw = nullptr;
    std::string handoff_id;
    for (int attempt = 0; attempt < 2; ++attempt) {
        const std::vector<WorkerState> pstates = states(prefill);
        const int p_idx = pick_prefill(pstates, {.prompt_blocks = prompt_blocks}, tried);
        if (p_idx < 0) {
            if (attempt == 0) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "no prefill worker is reachable");
            break;  // the first failure is returned below
        }
        tried.push_back(p_idx);
        pw = prefill[static_cast<size_t>(p_idx)].get();
        StatusOr<std::string> hid = new_request_id();
        if (!hid.ok()) return server::to_grpc_status(hid.status());
        handoff_id = "handoff-" + hid->substr(4);
        v1::PrefillRequest preq;
        *preq.mutable_request() = req;
        preq.set_handoff_id(handoff_id);
        preq.set_decode_worker(dw.address());
        preq.set_lease_seconds(options.lease_seconds);
        auto cctx = grpc::ClientContext::FromServerContext(*ctx);
        pw->authorize(*cctx);
        call.set(cctx.get());
        pw->in_flight.fetch_add(1);
        result.Clear();
        const grpc::Status s = pw->worker()->Prefill(cctx.get(), preq, &result);
        pw->in_flight.fetch_sub(1);
        call.set(nullptr);
        if (s.ok()) break;
        if (ctx->IsCancelled() || call.is_aborted())
            return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled during prefill");
        if (!worker_failure(s.error_code()) || attempt == 1) return annotate(s, "prefill worker " + pw->address());
        num_retries.fetch_add(1);
        logger().warn("prefill on {} failed ({}); retrying once on another prefill worker", pw->address(),
                      s.error_message());
        pw = nullptr;
    }
    if (pw == nullptr) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "prefill failed on every prefill worker");
    if (result.finished()) {
        if (!write_finished_at_first(result, client_id, writer))
            return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
        return grpc::Status::OK;
    }

    v1::DecodeRequest dreq;
    *dreq.mutable_request() = std::move(req);
    *dreq.mutable_prefill() = std::move(result);
    dreq.set_prefill_worker(pw->address());
    auto dctx = grpc::ClientContext::FromServerContext(*ctx);
    dw.authorize(*dctx);
    call.set(dctx.get());
    dw.in_flight.fetch_add(1);
    auto reader = dw.worker()->Decode(dctx.get(), dreq);
    v1::GenerateResponse msg;
    bool client_gone = false;
    while (reader->Read(&msg)) {
        msg.set_request_id(client_id);
        if (!writer->Write(msg)) {
            client_gone = true;
            dctx->TryCancel();
            break;
        }
    }
    grpc::Status s = reader->Finish();
    dw.in_flight.fetch_sub(1);
    call.set(nullptr);
    if (!s.ok() || client_gone) release_handoff(*pw, handoff_id);
    if (client_gone) return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
    if (!s.ok()) {
        if (ctx->IsCancelled() || call.is_aborted()) return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
        // The worker cut the stream (it shut down or died): the client cannot tell this from a
        // lost worker, and should retry.
        if (s.error_code() == grpc::StatusCode::CANCELLED)
            return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                "decode worker " + dw.address() + " ended the stream: " + s.error_message());
        return annotate(s, "decode worker " + dw.address());
    }
    return s;
}

grpc::Status Router::Impl::generate_aggregated(grpc::ServerContext* ctx, const v1::GenerateRequest& req,
                                               std::span<const Sha256Digest> hashes, const std::string& client_id,
                                               CallState& call, grpc::ServerWriter<v1::GenerateResponse>* writer) {
    std::vector<int> tried;
    grpc::Status first_failure;
    for (int attempt = 0; attempt < 2; ++attempt) {
        std::vector<WorkerState> st;
        for (const auto& w : aggregated) st.push_back(w->state(hashes));
        const int idx = pick_prefill(st, {.prompt_blocks = static_cast<int64_t>(hashes.size())}, tried);
        if (idx < 0) break;
        tried.push_back(idx);
        WorkerClient& w = *aggregated[static_cast<size_t>(idx)];
        if (!w.public_inference())
            return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                "aggregated worker " + w.address() + " reported no public address");
        auto cctx = grpc::ClientContext::FromServerContext(*ctx);
        call.set(cctx.get());
        w.in_flight.fetch_add(1);
        auto reader = w.public_inference()->Generate(cctx.get(), req);
        v1::GenerateResponse msg;
        bool any = false, client_gone = false;
        while (reader->Read(&msg)) {
            any = true;
            msg.set_request_id(client_id);
            if (!writer->Write(msg)) {
                client_gone = true;
                cctx->TryCancel();
                break;
            }
        }
        const grpc::Status s = reader->Finish();
        w.in_flight.fetch_sub(1);
        call.set(nullptr);
        if (client_gone) return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
        if (s.ok()) return s;
        if (ctx->IsCancelled() || call.is_aborted()) return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
        if (any || !worker_failure(s.error_code()) || attempt == 1) return annotate(s, "worker " + w.address());
        first_failure = annotate(s, "worker " + w.address());
        num_retries.fetch_add(1);
        logger().warn("{}; retrying once on another worker", first_failure.error_message());
    }
    if (!first_failure.ok()) return first_failure;
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "no worker is reachable");
}

grpc::Status Router::Impl::generate(grpc::ServerContext* ctx, const v1::GenerateRequest& request,
                                    grpc::ServerWriter<v1::GenerateResponse>* writer) {
    if (draining.load()) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the router is draining");
    num_requests.fetch_add(1);
    StatusOr<GenerateParams> params = server::build_generate_params(request, model_limits, limits);
    if (!params.ok()) return server::to_grpc_status(params.status());
    const std::vector<Sha256Digest> hashes = prompt_block_hashes(params->prompt_ids, block_size, params->cache_salt);

    // The worker sees an id of the router's (every router client shares the router's
    // namespace there); the client sees its own.
    StatusOr<std::string> wid = new_request_id();
    if (!wid.ok()) return server::to_grpc_status(wid.status());
    const std::string client_id = request.request_id().empty() ? *wid : request.request_id();
    const std::string ns = server::identify_caller(*ctx, options.admin_token).id_namespace;
    auto call = std::make_shared<CallState>();
    {
        std::lock_guard<std::mutex> lock(active_mu);
        if (!active.emplace(std::make_pair(ns, client_id), call).second)
            return grpc::Status(grpc::StatusCode::ALREADY_EXISTS,
                                "request_id " + log_field(client_id) + " is already in flight");
    }
    v1::GenerateRequest out = request;
    out.set_request_id(*wid);
    grpc::Status s = aggregated.empty()
                         ? generate_disaggregated(ctx, std::move(out), *params, hashes, client_id, *call, writer)
                         : generate_aggregated(ctx, out, hashes, client_id, *call, writer);
    if (!s.ok() && call->is_aborted() && !ctx->IsCancelled()) {
        // Aborted through Control.Abort: a final message, as the engine's servers send.
        v1::GenerateResponse f;
        f.set_request_id(client_id);
        f.mutable_final()->set_finish_reason(v1::FINISH_REASON_CANCELLED);
        writer->Write(f);
        s = grpc::Status::OK;
    }
    if (!s.ok()) num_failed.fetch_add(1);
    {
        std::lock_guard<std::mutex> lock(active_mu);
        active.erase({ns, client_id});
    }
    active_cv.notify_all();
    return s;
}

void Router::Impl::fill_load(v1::Load* out) {
    auto add_worker = [&](WorkerClient& w) {
        v1::WorkerLoad* wl = out->add_workers();
        wl->set_address(w.address());
        wl->set_role(w.role_name());
        wl->set_known_cached_blocks(w.known_hashes());
        wl->set_router_inflight(w.in_flight.load());
        bool ok = false;
        if (w.public_control()) {
            grpc::ClientContext ctx;
            ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
            ok = w.public_control()->GetLoad(&ctx, v1::GetLoadRequest(), wl->mutable_load()).ok();
        }
        wl->set_healthy(ok && w.healthy());
        if (!ok) {
            wl->clear_load();
            return;
        }
        const v1::Load& l = wl->load();
        out->set_num_waiting(out->num_waiting() + l.num_waiting());
        out->set_num_running(out->num_running() + l.num_running());
        out->set_kv_blocks_total(out->kv_blocks_total() + l.kv_blocks_total());
        out->set_kv_blocks_free(out->kv_blocks_free() + l.kv_blocks_free());
        out->set_kv_blocks_cached(out->kv_blocks_cached() + l.kv_blocks_cached());
        out->set_kv_block_size(l.kv_block_size());
        out->set_num_preemptions(out->num_preemptions() + l.num_preemptions());
        out->set_num_steps(out->num_steps() + l.num_steps());
        out->set_num_generated_tokens(out->num_generated_tokens() + l.num_generated_tokens());
        out->set_failed(out->failed() || l.failed());
    };
    for (auto* list : {&prefill, &decode, &aggregated})
        for (auto& w : *list) add_worker(*w);
    {
        std::lock_guard<std::mutex> lock(active_mu);
        out->set_num_pending(static_cast<int64_t>(active.size()));
    }
    out->set_draining(draining.load());
}

namespace {

class InferenceService final : public v1::Inference::Service {
public:
    explicit InferenceService(Router::Impl* r) : r_(r) {}
    grpc::Status Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                          grpc::ServerWriter<v1::GenerateResponse>* writer) override {
        try {
            return r_->generate(ctx, *req, writer);
        } catch (const std::exception& e) {
            return grpc::Status(grpc::StatusCode::INTERNAL, std::string("router: ") + e.what());
        }
    }

private:
    Router::Impl* r_;
};

class ControlService final : public v1::Control::Service {
public:
    explicit ControlService(Router::Impl* r) : r_(r) {}

    grpc::Status GetModelInfo(grpc::ServerContext*, const v1::GetModelInfoRequest*, v1::ModelInfo* out) override {
        const ModelConfig& c = r_->config;
        out->set_name(r_->served_name);
        out->set_architecture(c.architecture);
        out->set_family(family_name(c.family));
        out->set_num_layers(c.num_layers);
        out->set_hidden_size(c.hidden_size);
        out->set_num_experts(c.num_experts);
        out->set_num_experts_per_tok(c.num_experts_per_tok);
        out->set_vocab_size(c.vocab_size);
        out->set_max_position_embeddings(c.max_position_embeddings);
        out->set_max_model_len(r_->model_limits.max_model_len);
        const auto& any = !r_->aggregated.empty() ? r_->aggregated : r_->decode;
        if (!any.empty()) out->set_dtype(any.front()->info().model().kv_dtype());
        out->set_has_tokenizer(r_->tokenizer != nullptr);
        for (int64_t id : c.eos_token_ids) out->add_eos_token_ids(id);
        out->set_bos_token_id(c.bos_token_id);
        out->set_num_heads(c.num_heads);
        out->set_num_kv_heads(c.num_kv_heads);
        out->set_head_dim(c.head_dim);
        return grpc::Status::OK;
    }

    grpc::Status GetServerInfo(grpc::ServerContext* ctx, const v1::GetServerInfoRequest*,
                               v1::ServerInfo* out) override {
        out->set_version(MOESERVE_VERSION);
        out->set_backend("router");
        const bool admin = server::identify_caller(*ctx, r_->options.admin_token).admin;
        auto& o = *out->mutable_options();
        auto join = [](const std::vector<std::string>& v) {
            std::string s;
            for (const auto& x : v) s += (s.empty() ? "" : ",") + x;
            return s;
        };
        o["role"] = "router";
        o["prefill"] = join(r_->options.prefill);
        o["decode"] = join(r_->options.decode);
        o["workers"] = join(r_->options.workers);
        o["model"] = admin ? r_->options.model_dir : "(hidden: admin only)";
        o["kv_block_size"] = std::to_string(r_->block_size);
        o["requests"] = std::to_string(r_->num_requests.load());
        o["prefill_retries"] = std::to_string(r_->num_retries.load());
        o["failed"] = std::to_string(r_->num_failed.load());
        out->set_uptime_seconds(std::chrono::duration<double>(std::chrono::steady_clock::now() - r_->started).count());
        out->set_draining(r_->draining.load());
        return grpc::Status::OK;
    }

    grpc::Status GetLoad(grpc::ServerContext*, const v1::GetLoadRequest*, v1::Load* out) override {
        r_->fill_load(out);
        return grpc::Status::OK;
    }

    grpc::Status Abort(grpc::ServerContext* ctx, const v1::AbortRequest* req, v1::AbortResponse* out) override {
        const server::Caller caller = server::identify_caller(*ctx, r_->options.admin_token);
        std::vector<std::shared_ptr<CallState>> hits;
        {
            std::lock_guard<std::mutex> lock(r_->active_mu);
            for (auto& [key, call] : r_->active)
                if (key.second == req->request_id() && (caller.admin || key.first == caller.id_namespace))
                    hits.push_back(call);
        }
        for (auto& c : hits) c->abort();
        out->set_aborted(!hits.empty());
        return grpc::Status::OK;
    }

    grpc::Status Drain(grpc::ServerContext* ctx, const v1::DrainRequest*, v1::DrainResponse* out) override {
        const server::Caller caller = server::identify_caller(*ctx, r_->options.admin_token);
        if (!caller.admin) return server::admin_required(caller, "Drain");
        r_->draining.store(true);
        if (r_->server && r_->server->GetHealthCheckService())
            r_->server->GetHealthCheckService()->SetServingStatus("moe.v1.Inference", false);
        std::lock_guard<std::mutex> lock(r_->active_mu);
        out->set_num_pending(static_cast<int64_t>(r_->active.size()));
        return grpc::Status::OK;
    }

    grpc::Status GetMetrics(grpc::ServerContext*, const v1::GetMetricsRequest*, v1::MetricsText* out) override {
        std::string t;
        t += "# TYPE moe:router_requests_total counter\nmoe:router_requests_total " +
             std::to_string(r_->num_requests.load()) + "\n";
        t += "# TYPE moe:router_retries_total counter\nmoe:router_retries_total " +
             std::to_string(r_->num_retries.load()) + "\n";
        t += "# TYPE moe:router_failed_total counter\nmoe:router_failed_total " +
             std::to_string(r_->num_failed.load()) + "\n";
        out->set_text(t);
        out->set_content_type("text/plain; version=0.0.4; charset=utf-8");
        return grpc::Status::OK;
    }

private:
    Router::Impl* r_;
};

}  // namespace

Status Router::Impl::connect_workers() {
    if (options.workers.empty() && (options.prefill.empty() || options.decode.empty()))
        return invalid_argument("router: give --prefill and --decode workers, or --workers (aggregated)");
    if (!options.workers.empty() && (!options.prefill.empty() || !options.decode.empty()))
        return invalid_argument("router: --workers (aggregated) cannot be combined with --prefill/--decode");
    const auto deadline_sys = std::chrono::system_clock::now() + options.connect_timeout;
    const auto deadline = std::chrono::steady_clock::now() + options.connect_timeout;
    struct ListSpec {
        const std::vector<std::string>* addrs;
        std::vector<std::unique_ptr<WorkerClient>>* out;
        const char* flag;
        v1::WorkerRole role;
    };
    const ListSpec lists[] = {{&options.prefill, &prefill, "--prefill", v1::WORKER_ROLE_PREFILL},
                              {&options.decode, &decode, "--decode", v1::WORKER_ROLE_DECODE},
                              {&options.workers, &aggregated, "--workers", v1::WORKER_ROLE_AGGREGATED}};
    const WorkerClient* first = nullptr;
    std::string first_sig;
    for (const ListSpec& l : lists) {
        for (const std::string& addr : *l.addrs) {
            auto w = std::make_unique<WorkerClient>(addr, options.internal_secret, options.max_message_bytes);
            MOE_RETURN_IF_ERROR(w->describe(deadline_sys));
            const v1::WorkerRole role = w->info().role();
            if (role != l.role && role != v1::WORKER_ROLE_AGGREGATED)
                return failed_precondition("worker " + addr + " (given in " + l.flag + ") serves role " +
                                           w->role_name());
            if (l.role == v1::WORKER_ROLE_AGGREGATED && role != v1::WORKER_ROLE_AGGREGATED)
                return failed_precondition("worker " + addr + " (given in --workers) serves role " + w->role_name() +
                                           ", not aggregated");
            const v1::ModelSignature& sig = w->info().model();
            // The router's own config against the worker's.
            if (sig.num_layers() != config.num_layers)
                return failed_precondition("worker " + addr + " serves a different model: num_layers " +
                                           std::to_string(sig.num_layers()) + ", the router's config.json says " +
                                           std::to_string(config.num_layers));
            if (sig.vocab_size() != config.vocab_size)
                return failed_precondition("worker " + addr + " serves a different model: vocab_size " +
                                           std::to_string(sig.vocab_size()) + ", the router's config.json says " +
                                           std::to_string(config.vocab_size));
            if (!sig.architecture().empty() && sig.architecture() != config.model_type &&
                sig.architecture() != config.architecture)
                return failed_precondition("worker " + addr + " serves a different model: architecture " +
                                           sig.architecture() + ", the router's config.json says " + config.model_type);
            if (first == nullptr) {
                first = w.get();
                block_size = sig.block_size();
            } else {
                // Every field of the signature must agree with the first worker's.
                if (const auto diff = server::first_signature_difference(first->info().model(), sig))
                    return failed_precondition("worker " + addr + " serves a different model than " + first->address() +
                                               ": ModelSignature." + diff->field + " is " + diff->b + " there and " +
                                               diff->a + " on " + first->address());
            }
            logger().info("worker {}: role {}, model {} ({} layers, block size {}, kv {}), {} KV blocks", addr,
                          w->role_name(), sig.model_name(), sig.num_layers(), sig.block_size(), sig.kv_dtype(),
                          w->info().kv_blocks_total());
            l.out->push_back(std::move(w));
        }
    }
    for (auto* list : {&prefill, &decode, &aggregated})
        for (auto& w : *list) w->start_events();
    for (auto* list : {&prefill, &decode, &aggregated})
        for (auto& w : *list)
            if (!w->wait_for_snapshot(deadline))
                return unavailable("worker " + w->address() +
                                   ": no prefix-cache snapshot (WorkerEvents.Subscribe) within " +
                                   std::to_string(options.connect_timeout.count()) + " ms");
    return Status();
}

StatusOr<std::unique_ptr<Router>> Router::start(RouterOptions options) {
    std::unique_ptr<Router> router(new Router());
    router->impl_ = std::make_unique<Impl>();
    Impl& r = *router->impl_;
    r.options = std::move(options);
    if (r.options.model_dir.empty())
        return invalid_argument("router: --model DIR (config.json and tokenizer) is required");
    MOE_ASSIGN_OR_RETURN(r.config, load_model_config(r.options.model_dir));
    const fs::path dir(r.options.model_dir);
    if (fs::exists(dir / "tokenizer.json") || (fs::exists(dir / "vocab.json") && fs::exists(dir / "merges.txt")) ||
        fs::exists(dir / "tiktoken.model")) {
        MOE_ASSIGN_OR_RETURN(r.tokenizer, Tokenizer::load(r.options.model_dir));
    } else {
        logger().warn("{} has no tokenizer: the router takes token-id input only", r.options.model_dir);
    }
    StatusOr<tmpl::ChatTemplate> chat = tmpl::ChatTemplate::load(r.options.model_dir);
    if (chat.ok())
        r.chat_template = std::make_shared<const tmpl::ChatTemplate>(std::move(chat).value());
    else if (chat.status().code() != StatusCode::kNotFound)
        r.model_limits.chat_template_error = chat.status().message();
    r.served_name = !r.options.served_model_name.empty()
                        ? r.options.served_model_name
                        : fs::path(r.options.model_dir).lexically_normal().filename().string();
    if (r.served_name.empty()) r.served_name = fs::path(r.options.model_dir).parent_path().filename().string();
    r.model_limits.tokenizer = r.tokenizer.get();
    r.model_limits.vocab_size = r.config.vocab_size;
    r.model_limits.max_model_len = r.config.max_position_embeddings;
    r.model_limits.chat_template = r.chat_template.get();
    r.limits.max_prompt_text_bytes = r.options.max_prompt_bytes;

    MOE_RETURN_IF_ERROR(r.connect_workers());

    r.inference_service = std::make_unique<InferenceService>(&r);
    r.control_service = std::make_unique<ControlService>(&r);
    grpc::EnableDefaultHealthCheckService(true);
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
    grpc::ServerBuilder b;
    b.AddListeningPort(r.options.host + ":" + std::to_string(r.options.port), grpc::InsecureServerCredentials(),
                       &r.bound_port);
    b.SetMaxReceiveMessageSize(r.options.max_message_bytes);
    b.RegisterService(r.inference_service.get());
    b.RegisterService(r.control_service.get());
    r.server = b.BuildAndStart();
    if (!r.server || r.bound_port == 0)
        return unavailable("router: cannot listen on " + r.options.host + ":" + std::to_string(r.options.port));
    if (auto* h = r.server->GetHealthCheckService()) {
        h->SetServingStatus("", true);
        h->SetServingStatus("moe.v1.Inference", true);
    }
    logger().info("router: {} prefill, {} decode, {} aggregated workers; KV block size {}", r.prefill.size(),
                  r.decode.size(), r.aggregated.size(), r.block_size);
    return router;
}

Router::~Router() {
    if (impl_) shutdown(std::chrono::milliseconds(0));
}

int Router::port() const {
    return impl_->bound_port;
}

std::string Router::address() const {
    return impl_->options.host + ":" + std::to_string(impl_->bound_port);
}

void Router::drain() {
    impl_->draining.store(true);
    if (impl_->server && impl_->server->GetHealthCheckService())
        impl_->server->GetHealthCheckService()->SetServingStatus("moe.v1.Inference", false);
}

void Router::shutdown(std::chrono::milliseconds grace) {
    std::call_once(impl_->shutdown_once, [&] {
        drain();
        {
            std::unique_lock<std::mutex> lock(impl_->active_mu);
            impl_->active_cv.wait_for(lock, grace, [&] { return impl_->active.empty(); });
            for (auto& [key, call] : impl_->active) call->abort();
        }
        if (impl_->server) impl_->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
        for (auto* list : {&impl_->prefill, &impl_->decode, &impl_->aggregated})
            for (auto& w : *list) w->stop();
    });
}

}  // namespace moe::router
