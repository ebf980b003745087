// An in-process moeserve server on 127.0.0.1 (port 0) and a real gRPC client for the tests.
#pragma once

#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/client_unary_call.h>
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine/engine.h"
#include "model/demo_model.h"
#include "moe/backend.h"
#include "moe/cpu_backend.h"
#include "moe/v1/control.grpc.pb.h"
#include "moe/v1/inference.grpc.pb.h"
#include "server/server.h"

namespace moe::server::testing {

inline std::string fixture_dir(const std::string& name) {
    return std::string(MOE_SOURCE_DIR) + "/tests/reference/fixtures/" + name;
}

struct Harness {
    std::unique_ptr<Backend> backend;
    std::unique_ptr<Engine> engine;
    std::unique_ptr<Server> server;
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<v1::Inference::Stub> inference;
    std::unique_ptr<v1::Control::Stub> control;

    ~Harness() {
        server.reset();
        if (engine) engine->stop();
    }

    // `model_dir` empty: the built-in demo model.
    static std::unique_ptr<Harness> start(const std::string& model_dir, EngineOptions options = {},
                                          ServerOptions server_options = {}) {
        auto h = std::make_unique<Harness>();
        h->backend = make_cpu_backend({.num_threads = 2});
        std::unique_ptr<MoeTransformer> model;
        std::unique_ptr<Tokenizer> tokenizer;
        if (model_dir.empty()) {
            StatusOr<DemoModel> demo = make_demo_model(*h->backend);
            EXPECT_TRUE(demo.ok()) << demo.status().to_string();
            if (!demo.ok()) return nullptr;
            model = std::move(demo.value().model);
            tokenizer = std::move(demo.value().tokenizer);
        } else {
            auto m = MoeTransformer::load(model_dir, *h->backend, {});
            EXPECT_TRUE(m.ok()) << m.status().to_string();
            if (!m.ok()) return nullptr;
            model = std::move(m).value();
        }
        if (options.kv_cache_bytes == 0) options.kv_cache_bytes = 64 << 20;  // not a fraction of the machine
        auto e = Engine::create(std::move(model), std::move(tokenizer), options);
        EXPECT_TRUE(e.ok()) << e.status().to_string();
        if (!e.ok()) return nullptr;
        h->engine = std::move(e).value();
        Status s = h->engine->start();
        EXPECT_TRUE(s.ok()) << s.to_string();
        server_options.host = "127.0.0.1";
        server_options.port = 0;
        auto srv = Server::start(*h->engine, server_options);
        EXPECT_TRUE(srv.ok()) << srv.status().to_string();
        if (!srv.ok()) return nullptr;
        h->server = std::move(srv).value();
        EXPECT_GT(h->server->port(), 0);
        h->channel = grpc::CreateChannel(h->server->address(), grpc::InsecureChannelCredentials());
        h->inference = v1::Inference::NewStub(h->channel);
        h->control = v1::Control::NewStub(h->channel);
        return h;
    }

    v1::Load load() const {
        grpc::ClientContext ctx;
        v1::Load out;
        const grpc::Status s = control->GetLoad(&ctx, v1::GetLoadRequest(), &out);
        EXPECT_TRUE(s.ok()) << s.error_message();
        return out;
    }

    v1::ModelInfo model_info() const {
        grpc::ClientContext ctx;
        v1::ModelInfo out;
        const grpc::Status s = control->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &out);
        EXPECT_TRUE(s.ok()) << s.error_message();
        return out;
    }

    // Polls GetLoad until nothing is pending and every KV block is allocatable again.
    bool wait_kv_idle(std::chrono::milliseconds timeout, v1::Load* last = nullptr) const {
        const auto until = std::chrono::steady_clock::now() + timeout;
        v1::Load l;
        do {
            l = load();
            if (l.num_pending() == 0 && l.kv_blocks_free() == l.kv_blocks_total()) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        } while (std::chrono::steady_clock::now() < until);
        if (last) *last = l;
        return l.num_pending() == 0 && l.kv_blocks_free() == l.kv_blocks_total();
    }
};

struct StreamResult {
    grpc::Status status;
    std::string request_id;
    std::vector<int32_t> ids;
    std::string text;
    int num_deltas = 0;
    std::optional<v1::Final> final_msg;
};

// One Generate call read to the end (optionally with a deadline).
inline StreamResult collect(v1::Inference::Stub& stub, const v1::GenerateRequest& req,
                            std::optional<std::chrono::milliseconds> deadline = std::nullopt) {
    StreamResult r;
    grpc::ClientContext ctx;
    if (deadline) ctx.set_deadline(std::chrono::system_clock::now() + *deadline);
    auto reader = stub.Generate(&ctx, req);
    v1::GenerateResponse msg;
    while (reader->Read(&msg)) {
        r.request_id = msg.request_id();
        if (msg.has_delta()) {
            ++r.num_deltas;
            r.ids.insert(r.ids.end(), msg.delta().token_ids().begin(), msg.delta().token_ids().end());
            r.text += msg.delta().text();
        } else if (msg.has_final()) {
            r.final_msg = msg.final();
        }
    }
    r.status = reader->Finish();
    return r;
}

// grpc.health.v1.Health/Check with the messages encoded by hand (no generated health stubs):
// 1 SERVING, 2 NOT_SERVING, 0 UNKNOWN, -code for an RPC failure.
inline int health_status(grpc::Channel& channel, const std::string& service) {
    std::string wire;
    wire.push_back(0x0A);
    wire.push_back(static_cast<char>(service.size()));
    wire += service;
    grpc::Slice slice(wire);
    grpc::ByteBuffer request(&slice, 1);
    grpc::ByteBuffer response;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    const grpc::internal::RpcMethod method("/grpc.health.v1.Health/Check", grpc::internal::RpcMethod::NORMAL_RPC);
    const grpc::Status s = grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(&channel, method, &ctx,
                                                                                                 request, &response);
    if (!s.ok()) return -static_cast<int>(s.error_code());
    std::vector<grpc::Slice> slices;
    if (!response.Dump(&slices).ok()) return -100;
    std::string out;
    for (const auto& sl : slices) out.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
    if (out.empty()) return 0;
    if (out.size() != 2 || out[0] != 0x08) return -101;
    return out[1];
}

inline v1::GenerateRequest greedy_ids(const std::vector<int32_t>& prompt, int max_tokens) {
    v1::GenerateRequest req;
    for (int32_t id : prompt) req.mutable_token_ids()->add_ids(id);
    req.mutable_sampling()->set_temperature(0.0f);
    req.mutable_stopping()->set_max_tokens(max_tokens);
    req.mutable_stopping()->set_ignore_eos(true);
    return req;
}

}  // namespace moe::server::testing
