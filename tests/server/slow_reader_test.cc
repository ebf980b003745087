// Defect I (#18): a client that never reads must not make the server buffer its whole output.
// Past --stream-buffer-bytes of unsent output the request is cancelled (its KV blocks freed) and
// the call ends RESOURCE_EXHAUSTED; the server keeps serving others.
#include "server_harness.h"

namespace moe::server::testing {
namespace {

std::shared_ptr<grpc::Channel> small_window_channel(const std::string& address) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);  // keep the client's receive window small
    args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 16 << 10);
    return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

TEST(ServerSlowReader, AClientThatDoesNotReadIsEndedResourceExhausted) {
    ServerOptions so;
    so.stream_buffer_bytes = 32 << 10;
    auto h = Harness::start("", {}, so);
    ASSERT_NE(h, nullptr);
    const int64_t n = h->model_info().max_model_len() - 4;
    v1::GenerateRequest req = greedy_ids({1, 2, 3, 4}, static_cast<int>(n));
    req.mutable_output()->set_logprobs(20);  // ~200 bytes per token
    auto stub = v1::Inference::NewStub(small_window_channel(h->server->address()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(300));
    auto reader = stub->Generate(&ctx, req);
    // Do not read. The engine must drop the request well before it generates all n tokens.
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(240);
    v1::Load l;
    bool started = false;
    do {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        l = h->load();
        started |= l.num_pending() > 0;
    } while ((!started || l.num_pending() > 0) && std::chrono::steady_clock::now() < until);
    ASSERT_TRUE(started);
    EXPECT_EQ(l.num_pending(), 0) << "the unread request is still running";
    EXPECT_LT(l.num_generated_tokens(), n) << "the whole output was generated (and buffered)";
    EXPECT_TRUE(h->wait_kv_idle(std::chrono::seconds(10)));
    // Now read: what had been sent, then RESOURCE_EXHAUSTED naming the budget.
    v1::GenerateResponse msg;
    int64_t got = 0;
    bool final_seen = false;
    while (reader->Read(&msg)) {
        if (msg.has_delta()) got += msg.delta().token_ids_size();
        final_seen |= msg.has_final();
    }
    const grpc::Status s = reader->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
    EXPECT_NE(s.error_message().find("--stream-buffer-bytes"), std::string::npos) << s.error_message();
    EXPECT_FALSE(final_seen);
    EXPECT_LT(got, n);
    // Still serving.
    const StreamResult ok = collect(*h->inference, greedy_ids({9, 10}, 3), std::chrono::seconds(60));
    EXPECT_TRUE(ok.status.ok()) << ok.status.error_message();
}

TEST(ServerSlowReader, AllStreamsTogetherAreBoundedByTheTotalBudget) {
    ServerOptions so;
    so.stream_buffer_bytes = 64 << 10;
    so.total_stream_buffer_bytes = 72 << 10;  // two unread streams pass it before either passes its own
    auto h = Harness::start("", {}, so);
    ASSERT_NE(h, nullptr);
    const int64_t n = h->model_info().max_model_len() - 4;
    v1::GenerateRequest req = greedy_ids({1, 2, 3, 4}, static_cast<int>(n));
    req.mutable_output()->set_logprobs(20);
    struct Client {
        std::unique_ptr<v1::Inference::Stub> stub;
        grpc::ClientContext ctx;
        std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader;
    };
    Client clients[2];
    for (Client& c : clients) {
        c.stub = v1::Inference::NewStub(small_window_channel(h->server->address()));
        c.ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(300));
        c.reader = c.stub->Generate(&c.ctx, req);
    }
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(240);
    v1::Load l;
    bool started = false;
    do {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        l = h->load();
        started |= l.num_pending() > 0;
    } while ((!started || l.num_pending() > 0) && std::chrono::steady_clock::now() < until);
    EXPECT_EQ(l.num_pending(), 0);
    int total_budget_hits = 0;
    for (Client& c : clients) {
        v1::GenerateResponse msg;
        while (c.reader->Read(&msg)) {
        }
        const grpc::Status s = c.reader->Finish();
        EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
        total_budget_hits += s.error_message().find("--total-stream-buffer-bytes") != std::string::npos;
    }
    EXPECT_GE(total_budget_hits, 1);
    EXPECT_TRUE(h->wait_kv_idle(std::chrono::seconds(10)));
}

TEST(ServerSlowReader, BadBufferOptionsAreRefused) {
    auto backend = make_cpu_backend({.num_threads = 1});
    auto demo = make_demo_model(*backend);
    ASSERT_TRUE(demo.ok());
    auto engine = Engine::create(std::move(demo->model), std::move(demo->tokenizer), {.kv_cache_bytes = 8 << 20});
    ASSERT_TRUE(engine.ok());
    ServerOptions so;
    so.port = 0;
    so.stream_buffer_bytes = 8 << 20;
    so.total_stream_buffer_bytes = 1 << 20;
    auto s = Server::start(**engine, so);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.status().message().find("stream_buffer_bytes"), std::string::npos) << s.status().message();
}

}  // namespace
}  // namespace moe::server::testing
