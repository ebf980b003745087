// The API through the real server: bad input, control RPCs, health, abort, drain.
#include <grpcpp/impl/client_unary_call.h>

#include <cmath>
#include <functional>
#include <limits>

#include "server/request_builder.h"
#include "server_harness.h"

namespace moe::server::testing {
namespace {

class DemoServer : public ::testing::Test {
protected:
    static void SetUpTestSuite() { h_ = Harness::start("").release(); }
    static void TearDownTestSuite() {
        delete h_;
        h_ = nullptr;
    }
    void SetUp() override { ASSERT_NE(h_, nullptr); }
    static Harness* h_;
};
Harness* DemoServer::h_ = nullptr;

struct BadCase {
    const char* name;
    std::function<void(v1::GenerateRequest&, const v1::ModelInfo&)> mutate;
    std::vector<std::string> must_mention;  // the field and the limit
};

TEST_F(DemoServer, BadInputIsInvalidArgumentNamingFieldAndLimit) {
    const v1::ModelInfo info = h_->model_info();
    ASSERT_GT(info.vocab_size(), 0);
    ASSERT_GT(info.max_model_len(), 2);
    const std::string vocab = std::to_string(info.vocab_size());
    const std::string ctx_len = std::to_string(info.max_model_len());
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const std::vector<BadCase> cases = {
        {"no input", [](auto& r, auto&) { r.clear_input(); }, {"input"}},
        {"empty text", [](auto& r, auto&) { r.set_text(""); }, {"text", "empty"}},
        {"empty ids", [](auto& r, auto&) { r.mutable_token_ids()->clear_ids(); }, {"token_ids.ids", "empty"}},
        {"prompt longer than the context",
         [](auto& r, auto& i) {
             r.mutable_token_ids()->clear_ids();
             for (int64_t k = 0; k < i.max_model_len(); ++k) r.mutable_token_ids()->add_ids(1);
         },
         {"prompt", ctx_len}},
        {"max_tokens 0",
         [](auto& r, auto&) { r.mutable_stopping()->set_max_tokens(0); },
         {"stopping.max_tokens", ">= 1"}},
        {"max_tokens beyond the context",
         [](auto& r, auto& i) { r.mutable_stopping()->set_max_tokens(static_cast<int32_t>(i.max_model_len())); },
         {"stopping.max_tokens", ctx_len}},
        {"id = vocab_size",
         [](auto& r, auto& i) { r.mutable_token_ids()->add_ids(static_cast<int32_t>(i.vocab_size())); },
         {"token_ids.ids[3]", vocab}},
        {"negative id", [](auto& r, auto&) { r.mutable_token_ids()->set_ids(0, -5); }, {"token_ids.ids[0]", vocab}},
        {"invalid UTF-8",
         [](auto& r, auto&) { r.set_text(std::string("ab\xff\xfe", 4)); },
         {"text", "UTF-8", "byte 2"}},
        {"overlong UTF-8", [](auto& r, auto&) { r.set_text(std::string("\xc0\xaf", 2)); }, {"text", "UTF-8"}},
        {"NaN temperature",
         [nan](auto& r, auto&) { r.mutable_sampling()->set_temperature(nan); },
         {"sampling.temperature", "[0, 100]"}},
        {"negative temperature",
         [](auto& r, auto&) { r.mutable_sampling()->set_temperature(-0.5f); },
         {"sampling.temperature", "[0, 100]"}},
        {"top_p 0", [](auto& r, auto&) { r.mutable_sampling()->set_top_p(0.0f); }, {"sampling.top_p", "(0, 1]"}},
        {"top_p 1.5", [](auto& r, auto&) { r.mutable_sampling()->set_top_p(1.5f); }, {"sampling.top_p", "(0, 1]"}},
        {"top_p NaN", [nan](auto& r, auto&) { r.mutable_sampling()->set_top_p(nan); }, {"sampling.top_p", "(0, 1]"}},
        {"top_k -2", [](auto& r, auto&) { r.mutable_sampling()->set_top_k(-2); }, {"sampling.top_k", "-1"}},
        {"min_p 2", [](auto& r, auto&) { r.mutable_sampling()->set_min_p(2.0f); }, {"sampling.min_p", "[0, 1]"}},
        {"presence_penalty 3",
         [](auto& r, auto&) { r.mutable_sampling()->set_presence_penalty(3.0f); },
         {"sampling.presence_penalty", "[-2, 2]"}},
        {"repetition_penalty 0",
         [](auto& r, auto&) { r.mutable_sampling()->set_repetition_penalty(0.0f); },
         {"sampling.repetition_penalty"}},
        {"too many stop strings",
         [](auto& r, auto&) {
             for (int k = 0; k < 17; ++k) r.mutable_stopping()->add_stop("s" + std::to_string(k));
         },
         {"stopping.stop", "16"}},
        {"too long stop string",
         [](auto& r, auto&) { r.mutable_stopping()->add_stop(std::string(257, 'x')); },
         {"stopping.stop[0]", "256"}},
        {"empty stop string",
         [](auto& r, auto&) { r.mutable_stopping()->add_stop(""); },
         {"stopping.stop[0]", "empty"}},
        {"stop id outside the vocabulary",
         [](auto& r, auto& i) { r.mutable_stopping()->add_stop_token_ids(static_cast<int32_t>(i.vocab_size()) + 7); },
         {"stopping.stop_token_ids[0]", vocab}},
        {"min_tokens above max_tokens",
         [](auto& r, auto&) {
             r.mutable_stopping()->set_max_tokens(4);
             r.mutable_stopping()->set_min_tokens(5);
         },
         {"stopping.min_tokens", "4"}},
        {"logprobs 21", [](auto& r, auto&) { r.mutable_output()->set_logprobs(21); }, {"output.logprobs", "20"}},
        {"stream_interval 0",
         [](auto& r, auto&) { r.mutable_output()->set_stream_interval(0); },
         {"output.stream_interval", "1024"}},
        {"request_id too long", [](auto& r, auto&) { r.set_request_id(std::string(129, 'r')); }, {"request_id", "128"}},
    };
    for (const BadCase& c : cases) {
        SCOPED_TRACE(c.name);
        v1::GenerateRequest req = greedy_ids({1, 2, 3}, 4);
        c.mutate(req, info);
        const StreamResult r = collect(*h_->inference, req, std::chrono::seconds(30));
        EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << r.status.error_message();
        for (const std::string& s : c.must_mention)
            EXPECT_NE(r.status.error_message().find(s), std::string::npos)
                << "message \"" << r.status.error_message() << "\" does not mention \"" << s << "\"";
        EXPECT_TRUE(r.ids.empty());
        EXPECT_FALSE(r.final_msg.has_value());
    }
    // The server keeps serving, and nothing leaked into the engine.
    const StreamResult ok = collect(*h_->inference, greedy_ids({1, 2, 3}, 5), std::chrono::seconds(60));
    ASSERT_TRUE(ok.status.ok()) << ok.status.error_message();
    EXPECT_EQ(ok.ids.size(), 5u);
    ASSERT_TRUE(ok.final_msg.has_value());
    EXPECT_EQ(ok.final_msg->finish_reason(), v1::FINISH_REASON_LENGTH);
    EXPECT_TRUE(h_->wait_kv_idle(std::chrono::seconds(10)));
}

TEST_F(DemoServer, TextPromptStreamsTextAndUsage) {
    v1::GenerateRequest req;
    req.set_text("Hello, world");
    req.set_request_id("text-1");
    req.mutable_sampling()->set_temperature(0.0f);
    req.mutable_stopping()->set_max_tokens(6);
    req.mutable_stopping()->set_ignore_eos(true);
    req.mutable_output()->set_logprobs(3);
    grpc::ClientContext ctx;
    auto reader = h_->inference->Generate(&ctx, req);
    v1::GenerateResponse msg;
    int tokens = 0;
    std::optional<v1::Final> fin;
    while (reader->Read(&msg)) {
        EXPECT_EQ(msg.request_id(), "text-1");
        if (msg.has_delta()) {
            EXPECT_EQ(msg.delta().tokens_size(), msg.delta().token_ids_size());
            for (const auto& t : msg.delta().tokens()) {
                EXPECT_LE(t.logprob(), 0.0f);
                EXPECT_EQ(t.top_size(), 3);
                for (int k = 1; k < t.top_size(); ++k) EXPECT_GE(t.top(k - 1).logprob(), t.top(k).logprob());
                // Greedy: the chosen token is the most likely one.
                if (t.top_size() > 0) EXPECT_EQ(t.top(0).token_id(), t.token_id());
            }
            tokens += msg.delta().token_ids_size();
        } else {
            fin = msg.final();
        }
    }
    ASSERT_TRUE(reader->Finish().ok());
    EXPECT_EQ(tokens, 6);
    ASSERT_TRUE(fin.has_value());
    EXPECT_EQ(fin->usage().completion_tokens(), 6);
    EXPECT_GT(fin->usage().prompt_tokens(), 0);
    EXPECT_GE(fin->timing().total_seconds(), fin->timing().ttft_seconds());
    EXPECT_GT(fin->timing().ttft_seconds(), 0.0);
}

TEST_F(DemoServer, ControlReportsModelServerAndIdleLoad) {
    const v1::ModelInfo info = h_->model_info();
    EXPECT_FALSE(info.architecture().empty());
    EXPECT_GT(info.num_layers(), 0);
    EXPECT_GT(info.num_experts(), 0);
    EXPECT_GT(info.num_experts_per_tok(), 0);
    EXPECT_TRUE(info.has_tokenizer());
    EXPECT_LE(info.max_model_len(), info.max_position_embeddings());
    grpc::ClientContext ctx;
    v1::ServerInfo si;
    ASSERT_TRUE(h_->control->GetServerInfo(&ctx, v1::GetServerInfoRequest(), &si).ok());
    EXPECT_FALSE(si.version().empty());
    EXPECT_FALSE(si.draining());
    v1::Load l;
    ASSERT_TRUE(h_->wait_kv_idle(std::chrono::seconds(10), &l));
    EXPECT_GT(l.kv_blocks_total(), 0);
    EXPECT_GT(l.kv_block_size(), 0);
}

TEST_F(DemoServer, AbortEndsTheStreamCancelled) {
    const v1::ModelInfo info = h_->model_info();
    v1::GenerateRequest req = greedy_ids({5, 6, 7}, static_cast<int>(info.max_model_len() - 3));
    req.set_request_id("to-abort");
    grpc::ClientContext ctx;
    auto reader = h_->inference->Generate(&ctx, req);
    v1::GenerateResponse msg;
    ASSERT_TRUE(reader->Read(&msg));  // running: it has produced a token
    v1::AbortRequest ar;
    ar.set_request_id("to-abort");
    v1::AbortResponse resp;
    grpc::ClientContext actx;
    ASSERT_TRUE(h_->control->Abort(&actx, ar, &resp).ok());
    EXPECT_TRUE(resp.aborted());
    std::optional<v1::Final> fin;
    int64_t streamed = msg.has_delta() ? msg.delta().token_ids_size() : 0;
    while (reader->Read(&msg)) {
        if (msg.has_final())
            fin = msg.final();
        else
            streamed += msg.delta().token_ids_size();
    }
    ASSERT_TRUE(reader->Finish().ok());
    ASSERT_TRUE(fin.has_value());
    EXPECT_EQ(fin->finish_reason(), v1::FINISH_REASON_CANCELLED);
    EXPECT_LT(streamed, info.max_model_len() - 3);
    EXPECT_TRUE(h_->wait_kv_idle(std::chrono::seconds(10)));
    grpc::ClientContext actx2;
    ASSERT_TRUE(h_->control->Abort(&actx2, ar, &resp).ok());
    EXPECT_FALSE(resp.aborted());
}

// grpc.health.v1.Health/Check with the two-field messages encoded by hand, so that the test
// needs no generated health stubs: request field 1 = service (string), response field 1 =
// status (enum: 1 SERVING, 2 NOT_SERVING).
int health_check(grpc::Channel& channel, const std::string& service) {
    std::string wire;
    wire.push_back(0x0A);
    wire.push_back(static_cast<char>(service.size()));
    wire += service;
    grpc::Slice slice(wire);
    grpc::ByteBuffer request(&slice, 1);
    grpc::ByteBuffer response;
    grpc::ClientContext ctx;
    const grpc::internal::RpcMethod method("/grpc.health.v1.Health/Check", grpc::internal::RpcMethod::NORMAL_RPC);
    const grpc::Status s = grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(&channel, method, &ctx,
                                                                                                 request, &response);
    if (!s.ok()) return -static_cast<int>(s.error_code());
    std::vector<grpc::Slice> slices;
    if (!response.Dump(&slices).ok()) return -100;
    std::string out;
    for (const auto& sl : slices) out.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
    if (out.empty()) return 0;  // UNKNOWN (default value, not encoded)
    if (out.size() != 2 || out[0] != 0x08) return -101;
    return out[1];
}

TEST(ServerHealth, LivenessReadinessAndDrain) {
    auto h = Harness::start("");
    ASSERT_NE(h, nullptr);
    EXPECT_EQ(health_check(*h->channel, ""), 1);
    EXPECT_EQ(health_check(*h->channel, "moe.v1.Inference"), 1);
    EXPECT_EQ(health_check(*h->channel, "no.such.Service"), -static_cast<int>(grpc::StatusCode::NOT_FOUND));

    // A request in flight when the drain begins still completes.
    v1::GenerateRequest long_req = greedy_ids({1, 2}, 24);
    StreamResult in_flight;
    grpc::ClientContext ctx;
    auto reader = h->inference->Generate(&ctx, long_req);
    v1::GenerateResponse msg;
    ASSERT_TRUE(reader->Read(&msg));
    int64_t got = msg.has_delta() ? msg.delta().token_ids_size() : 0;

    grpc::ClientContext dctx;
    v1::DrainResponse dresp;
    ASSERT_TRUE(h->control->Drain(&dctx, v1::DrainRequest(), &dresp).ok());
    EXPECT_GE(dresp.num_pending(), 0);
    EXPECT_EQ(health_check(*h->channel, ""), 1);                  // alive
    EXPECT_EQ(health_check(*h->channel, "moe.v1.Inference"), 2);  // not ready
    const StreamResult rejected = collect(*h->inference, greedy_ids({1, 2}, 2), std::chrono::seconds(10));
    EXPECT_EQ(rejected.status.error_code(), grpc::StatusCode::UNAVAILABLE) << rejected.status.error_message();
    EXPECT_TRUE(h->load().draining());

    std::optional<v1::Final> fin;
    while (reader->Read(&msg)) {
        if (msg.has_final())
            fin = msg.final();
        else
            got += msg.delta().token_ids_size();
    }
    ASSERT_TRUE(reader->Finish().ok());
    ASSERT_TRUE(fin.has_value());
    EXPECT_EQ(fin->finish_reason(), v1::FINISH_REASON_LENGTH);
    EXPECT_EQ(got, 24);
}

TEST(ServerShutdown, GracePeriodLetsInFlightFinishThenPortCloses) {
    auto h = Harness::start("");
    ASSERT_NE(h, nullptr);
    grpc::ClientContext ctx;
    auto reader = h->inference->Generate(&ctx, greedy_ids({3, 4}, 12));
    v1::GenerateResponse msg;
    ASSERT_TRUE(reader->Read(&msg));
    std::thread stopper([&] { h->server->shutdown(std::chrono::seconds(60)); });
    int64_t got = msg.has_delta() ? msg.delta().token_ids_size() : 0;
    std::optional<v1::Final> fin;
    while (reader->Read(&msg)) {
        if (msg.has_final())
            fin = msg.final();
        else
            got += msg.delta().token_ids_size();
    }
    EXPECT_TRUE(reader->Finish().ok());
    stopper.join();
    ASSERT_TRUE(fin.has_value());
    EXPECT_EQ(fin->finish_reason(), v1::FINISH_REASON_LENGTH);
    EXPECT_EQ(got, 12);
    const StreamResult after = collect(*h->inference, greedy_ids({1}, 1), std::chrono::seconds(5));
    EXPECT_EQ(after.status.error_code(), grpc::StatusCode::UNAVAILABLE) << after.status.error_message();
}

// With every stream ended, shutdown does not wait for streams at all (it once waited its full
// 10 s bound on every stop: each request was counted twice and returned once).
TEST(ServerShutdown, AfterFinishedStreamsIsPrompt) {
    auto h = Harness::start("");
    ASSERT_NE(h, nullptr);
    for (int i = 0; i < 3; ++i) {
        const StreamResult r = collect(*h->inference, greedy_ids({1, 2}, 2), std::chrono::seconds(60));
        ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    }
    const auto t0 = std::chrono::steady_clock::now();
    h->server->shutdown(std::chrono::seconds(30));
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
}

TEST(ServerShutdown, ZeroGraceCancelsInFlight) {
    auto h = Harness::start("");
    ASSERT_NE(h, nullptr);
    const int64_t n = h->model_info().max_model_len() - 2;
    grpc::ClientContext ctx;
    auto reader = h->inference->Generate(&ctx, greedy_ids({3, 4}, static_cast<int>(n)));
    v1::GenerateResponse msg;
    ASSERT_TRUE(reader->Read(&msg));
    h->server->shutdown(std::chrono::milliseconds(0));
    int64_t got = msg.has_delta() ? msg.delta().token_ids_size() : 0;
    std::optional<v1::Final> fin;
    while (reader->Read(&msg)) {
        if (msg.has_final())
            fin = msg.final();
        else
            got += msg.delta().token_ids_size();
    }
    const grpc::Status s = reader->Finish();
    // Either the CANCELLED final made it out before the port closed, or the call was cut.
    if (s.ok()) {
        ASSERT_TRUE(fin.has_value());
        EXPECT_EQ(fin->finish_reason(), v1::FINISH_REASON_CANCELLED);
    }
    EXPECT_LT(got, n);
    EXPECT_EQ(h->engine->load().pending, 0);
}

TEST(RequestBuilder, Utf8Validator) {
    EXPECT_EQ(first_invalid_utf8("plain ascii"), -1);
    EXPECT_EQ(first_invalid_utf8("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80"), -1);
    EXPECT_EQ(first_invalid_utf8(std::string("a\x80", 2)), 1);             // lone continuation
    EXPECT_EQ(first_invalid_utf8(std::string("\xe2\x82", 2)), 0);          // truncated
    EXPECT_EQ(first_invalid_utf8(std::string("\xed\xa0\x80", 3)), 0);      // surrogate
    EXPECT_EQ(first_invalid_utf8(std::string("\xf4\x90\x80\x80", 4)), 0);  // > U+10FFFF
    EXPECT_EQ(first_invalid_utf8(std::string("\xe0\x80\xaf", 3)), 0);      // overlong
}

}  // namespace
}  // namespace moe::server::testing
