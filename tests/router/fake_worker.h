// An in-test worker for the router's tests: moe.v1.Worker with scripted behaviour, the real
// WorkerEvents service over a KvEventHub the test publishes into, and moe.v1.Control.GetLoad, all
// on one port of 127.0.0.1 (its internal and public address at once).
#pragma once

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/kv_event_hub.h"
#include "model/config.h"
#include "moe/v1/control.grpc.pb.h"
#include "moe/v1/worker.grpc.pb.h"
#include "server/worker_events_service.h"

namespace moe::router::testing {

inline std::string fixture_dir(const std::string& name) {
    return std::string(MOE_SOURCE_DIR) + "/tests/reference/fixtures/" + name;
}

// The signature a worker serving `dir` would report.
inline v1::ModelSignature signature_of(const std::string& dir, int32_t block_size = 4) {
    v1::ModelSignature s;
    auto c = load_model_config(dir);
    EXPECT_TRUE(c.ok()) << c.status().to_string();
    if (!c.ok()) return s;
    s.set_model_name(dir);
    s.set_architecture(c->model_type);
    s.set_num_layers(static_cast<int32_t>(c->num_layers));
    s.set_num_kv_heads(static_cast<int32_t>(c->num_kv_heads));
    s.set_head_dim(static_cast<int32_t>(c->head_dim));
    s.set_kv_elems_per_token_per_layer(2 * c->num_kv_heads * c->head_dim);
    s.set_kv_dtype("f32");
    s.set_block_size(block_size);
    s.set_vocab_size(static_cast<int32_t>(c->vocab_size));
    s.set_weights_fingerprint("fake:" + dir);
    return s;
}

class FakeWorker final : public v1::Worker::Service, public v1::Control::Service {
public:
    enum class PrefillMode { kOk, kUnavailable, kFinished };
    enum class DecodeMode { kOk, kDieAfterFirst, kHangAfterFirst };

    FakeWorker(v1::WorkerRole role, v1::ModelSignature sig, std::string secret = "")
        : role_(role), sig_(std::move(sig)), secret_(std::move(secret)) {
        hub = std::make_shared<KvEventHub>();
        events_ = server::make_worker_events_service(hub, secret_);
        grpc::ServerBuilder b;
        b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
        b.RegisterService(static_cast<v1::Worker::Service*>(this));
        b.RegisterService(static_cast<v1::Control::Service*>(this));
        b.RegisterService(events_.get());
        server_ = b.BuildAndStart();
        EXPECT_GT(port_, 0);
        hub->publish({}, KvLoadInfo{.kv_blocks_total = 100, .kv_blocks_free = 100});
    }
    ~FakeWorker() override { stop(); }

    // Ends the server as a killed process would (open streams fail).
    // Idempotent; a second caller waits for the first (a Decode may stop its own server).
    void stop() {
        std::call_once(stopped_, [this] {
            hub->close();
            {
                std::lock_guard<std::mutex> lock(mu);
                dead = true;
            }
            server_->Shutdown(std::chrono::system_clock::now());
            server_->Wait();
        });
    }

    std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

    // ---- moe.v1.Worker
    grpc::Status Describe(grpc::ServerContext* ctx, const v1::DescribeRequest*, v1::WorkerInfo* out) override {
        if (grpc::Status s = auth(ctx); !s.ok()) return s;
        out->set_role(role_);
        *out->mutable_model() = sig_;
        out->add_kv_transports("inproc");
        out->set_kv_blocks_total(100);
        out->set_kv_blocks_free(100);
        out->set_public_address(address());
        out->set_internal_address(address());
        return grpc::Status::OK;
    }

    grpc::Status Prefill(grpc::ServerContext* ctx, const v1::PrefillRequest* req, v1::PrefillResult* out) override {
        if (grpc::Status s = auth(ctx); !s.ok()) return s;
        ++prefills;
        {
            std::lock_guard<std::mutex> lock(mu);
            last_prefill = *req;
        }
        if (prefill_mode == PrefillMode::kUnavailable)
            return grpc::Status(grpc::StatusCode::UNAVAILABLE, "fake prefill worker is down");
        out->set_handoff_id(req->handoff_id());
        out->mutable_first_token()->set_token_id(first_token);
        for (int32_t id : req->request().token_ids().ids()) out->add_prompt_token_ids(id);
        if (prefill_mode == PrefillMode::kFinished) {
            out->set_finished(true);
            out->mutable_final()->set_finish_reason(v1::FINISH_REASON_LENGTH);
            out->mutable_final()->mutable_usage()->set_completion_tokens(1);
            return grpc::Status::OK;
        }
        out->set_seed(7);
        out->mutable_kv()->set_transport("inproc");
        return grpc::Status::OK;
    }

    grpc::Status Decode(grpc::ServerContext* ctx, const v1::DecodeRequest* req,
                        grpc::ServerWriter<v1::GenerateResponse>* w) override {
        if (grpc::Status s = auth(ctx); !s.ok()) return s;
        ++decodes;
        {
            std::lock_guard<std::mutex> lock(mu);
            last_decode = *req;
        }
        const int n = req->request().stopping().has_max_tokens() ? req->request().stopping().max_tokens() : 4;
        for (int i = 0; i < n; ++i) {
            v1::GenerateResponse m;
            m.set_request_id(req->request().request_id());
            m.mutable_delta()->add_token_ids(i == 0 ? req->prefill().first_token().token_id() : 100 + i);
            if (!w->Write(m)) return grpc::Status::CANCELLED;
            if (i == 0 && decode_mode == DecodeMode::kDieAfterFirst) {
                std::thread([this] { stop(); }).detach();
                while (!ctx->IsCancelled()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
                return grpc::Status::CANCELLED;  // the shutdown cut it
            }
            if (i == 0 && decode_mode == DecodeMode::kHangAfterFirst) {
                while (!ctx->IsCancelled()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
                ++decode_cancels;
                return grpc::Status::CANCELLED;
            }
        }
        v1::GenerateResponse f;
        f.set_request_id(req->request().request_id());
        f.mutable_final()->set_finish_reason(v1::FINISH_REASON_LENGTH);
        w->Write(f);
        return grpc::Status::OK;
    }

    grpc::Status ReleaseHandoff(grpc::ServerContext* ctx, const v1::ReleaseHandoffRequest* req,
                                v1::ReleaseHandoffResponse* out) override {
        if (grpc::Status s = auth(ctx); !s.ok()) return s;
        std::lock_guard<std::mutex> lock(mu);
        released.push_back(req->handoff_id());
        out->set_released(true);
        return grpc::Status::OK;
    }

    // ---- moe.v1.Control (GetLoad only)
    grpc::Status GetLoad(grpc::ServerContext*, const v1::GetLoadRequest*, v1::Load* out) override {
        out->set_kv_blocks_total(100);
        out->set_kv_blocks_free(100);
        out->set_kv_block_size(sig_.block_size());
        return grpc::Status::OK;
    }

    std::shared_ptr<KvEventHub> hub;
    std::atomic<PrefillMode> prefill_mode{PrefillMode::kOk};
    std::atomic<DecodeMode> decode_mode{DecodeMode::kOk};
    std::atomic<int32_t> first_token{42};
    std::atomic<int> prefills{0}, decodes{0}, decode_cancels{0};
    std::mutex mu;
    bool dead = false;
    v1::PrefillRequest last_prefill;
    v1::DecodeRequest last_decode;
    std::vector<std::string> released;

private:
    grpc::Status auth(grpc::ServerContext* ctx) {
        if (secret_.empty()) return grpc::Status::OK;
        auto it = ctx->client_metadata().find("authorization");
        if (it == ctx->client_metadata().end() ||
            std::string(it->second.data(), it->second.size()) != "Bearer " + secret_)
            return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "fake worker: no or wrong secret");
        return grpc::Status::OK;
    }

    v1::WorkerRole role_;
    v1::ModelSignature sig_;
    std::string secret_;
    std::unique_ptr<grpc::Service> events_;
    std::unique_ptr<grpc::Server> server_;
    std::once_flag stopped_;
    int port_ = 0;
};

}  // namespace moe::router::testing
