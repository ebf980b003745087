// WorkerEvents.Subscribe over gRPC on a real engine (the demo model): the first message is a
// snapshot, a computed prompt's blocks arrive as the router's chained hashes, the secret is
// checked, and the stream ends when the engine stops.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <set>

#include "engine/engine_test_util.h"
#include "model/demo_model.h"
#include "moe/cpu_backend.h"
#include "moe/v1/worker.grpc.pb.h"
#include "router/routing_policy.h"
#include "server/worker_events_service.h"

namespace moe::router {
namespace {

using std::chrono::seconds;

struct EventsServer {
    std::unique_ptr<Backend> backend;
    std::shared_ptr<KvEventHub> hub = std::make_shared<KvEventHub>();
    std::unique_ptr<Engine> engine;
    std::unique_ptr<grpc::Service> service;
    std::unique_ptr<grpc::Server> server;
    int port = 0;
    std::unique_ptr<v1::WorkerEvents::Stub> stub;

    explicit EventsServer(const std::string& secret) {
        backend = make_cpu_backend({.num_threads = 1});
        auto demo = make_demo_model(*backend);
        EXPECT_TRUE(demo.ok());
        EngineOptions eo;
        eo.kv_cache_bytes = 8 << 20;
        eo.kv_block_size = 4;
        eo.kv_events = hub;
        auto e = Engine::create(std::move(demo->model), std::move(demo->tokenizer), eo);
        EXPECT_TRUE(e.ok()) << e.status().to_string();
        engine = std::move(e).value();
        EXPECT_TRUE(engine->start().ok());
        service = server::make_worker_events_service(hub, secret);
        grpc::ServerBuilder b;
        b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
        b.RegisterService(service.get());
        server = b.BuildAndStart();
        stub = v1::WorkerEvents::NewStub(
            grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
    }
    ~EventsServer() {
        if (engine) engine->stop();  // closes the hub: open streams end
        server->Shutdown(std::chrono::system_clock::now() + seconds(5));
    }
    std::vector<int32_t> run(std::vector<int32_t> prompt, const std::string& salt) {
        GenerateParams p;
        p.prompt_ids = std::move(prompt);
        p.stopping.max_tokens = 2;
        p.stopping.ignore_eos = true;
        p.cache_salt = salt;
        auto sink = std::make_shared<testing::CollectSink>();
        auto id = engine->submit(std::move(p), sink);
        EXPECT_TRUE(id.ok()) << id.status().to_string();
        EXPECT_TRUE(sink->wait());
        return sink->tokens();
    }
};

Sha256Digest digest_of(const std::string& raw) {
    Sha256Digest d{};
    EXPECT_EQ(raw.size(), d.size());
    std::memcpy(d.data(), raw.data(), std::min(raw.size(), d.size()));
    return d;
}

TEST(WorkerEvents, SnapshotThenStoredHashesOfAComputedPrompt) {
    EventsServer s("sec");
    std::vector<int32_t> prompt = {5, 6, 7, 8, 9, 10, 11, 12, 13, 14};  // 2 full blocks of 4
    s.run(prompt, "salty");  // before the subscription: reported in the snapshot

    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer sec");
    ctx.set_deadline(std::chrono::system_clock::now() + seconds(60));
    auto reader = s.stub->Subscribe(&ctx, v1::SubscribeEventsRequest());
    v1::KvEvents m;
    ASSERT_TRUE(reader->Read(&m));
    EXPECT_TRUE(m.reset());
    HashSet cached;
    for (const auto& h : m.stored()) cached.insert(digest_of(h));
    // Every full block of prompt + generated tokens that was computed is cached; the prompt's
    // two full blocks are what the router hashes.
    const auto want = prompt_block_hashes(prompt, 4, "salty");
    ASSERT_EQ(want.size(), 2u);
    EXPECT_EQ(leading_cached_blocks(want, cached), 2);
    EXPECT_GT(m.kv_blocks_total(), 0);
    // The load is the last one published: the request's blocks are freed just after its final
    // event, so an early snapshot may still count them; the idle pool follows as a batch.
    while (m.kv_blocks_free() != m.kv_blocks_total()) {
        ASSERT_TRUE(reader->Read(&m)) << "the stream ended before the pool showed idle";
        for (const auto& h : m.stored()) cached.insert(digest_of(h));
    }

    // A new prompt after subscribing arrives as a batch (reset false).
    std::vector<int32_t> other = {50, 51, 52, 53, 54, 55};
    s.run(other, "");
    const auto want2 = prompt_block_hashes(other, 4, "");
    bool seen = false;
    while (!seen && reader->Read(&m)) {
        EXPECT_FALSE(m.reset());
        for (const auto& h : m.stored()) cached.insert(digest_of(h));
        seen = leading_cached_blocks(want2, cached) == 1;
    }
    EXPECT_TRUE(seen);
    // The engine stops: the stream ends OK (not at the deadline).
    s.engine->stop();
    while (reader->Read(&m)) {
    }
    EXPECT_TRUE(reader->Finish().ok());
}

TEST(WorkerEvents, TheInternalSecretIsChecked) {
    EventsServer s("sec");
    {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + seconds(30));
        auto reader = s.stub->Subscribe(&ctx, v1::SubscribeEventsRequest());
        v1::KvEvents m;
        EXPECT_FALSE(reader->Read(&m));
        EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
    }
    {
        grpc::ClientContext ctx;
        ctx.AddMetadata("authorization", "Bearer nope");
        ctx.set_deadline(std::chrono::system_clock::now() + seconds(30));
        auto reader = s.stub->Subscribe(&ctx, v1::SubscribeEventsRequest());
        v1::KvEvents m;
        EXPECT_FALSE(reader->Read(&m));
        EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::PERMISSION_DENIED);
    }
}

TEST(WorkerEvents, CancelledSubscriberIsDetached) {
    EventsServer s("");
    {
        grpc::ClientContext ctx;
        auto reader = s.stub->Subscribe(&ctx, v1::SubscribeEventsRequest());
        v1::KvEvents m;
        ASSERT_TRUE(reader->Read(&m));
        EXPECT_EQ(s.hub->num_subscribers(), 1);
        ctx.TryCancel();
        while (reader->Read(&m)) {
        }
        EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
    }
    const auto until = std::chrono::steady_clock::now() + seconds(20);
    while (s.hub->num_subscribers() != 0 && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    EXPECT_EQ(s.hub->num_subscribers(), 0);
    // The engine goes on publishing to nobody.
    s.run({1, 2, 3, 4, 5}, "");
}

}  // namespace
}  // namespace moe::router
