// The request contract through the server (#17 item 5): server-assigned ids are random, the
// server and engine share one limits struct, a passed deadline is FINISH_REASON_DEADLINE with
// DEADLINE_EXCEEDED, and readiness turns NOT_SERVING when the engine reports failure.
#include <atomic>

#include "server/request_builder.h"
#include "server_harness.h"

namespace moe::server::testing {
namespace {

TEST(ServerRequestContract, AssignedIdsAreRandomAndEchoed) {
    auto h = Harness::start("");
    ASSERT_NE(h, nullptr);
    const StreamResult a = collect(*h->inference, greedy_ids({1, 2}, 1), std::chrono::seconds(60));
    const StreamResult b = collect(*h->inference, greedy_ids({1, 2}, 1), std::chrono::seconds(60));
    ASSERT_TRUE(a.status.ok()) << a.status.error_message();
    ASSERT_TRUE(b.status.ok()) << b.status.error_message();
    EXPECT_EQ(a.request_id.size(), 36u) << a.request_id;
    EXPECT_EQ(a.request_id.rfind("req-", 0), 0u) << a.request_id;
    EXPECT_NE(a.request_id, b.request_id);
    EXPECT_NE(a.request_id, "req-0");
    EXPECT_NE(a.request_id, "req-1");
}

TEST(ServerRequestContract, ServerValidatesWithTheEnginesLimits) {
    // A smaller engine limit is what the server enforces too: one struct, not two.
    EngineOptions eo;
    eo.limits.max_request_id_bytes = 40;
    eo.limits.max_prompt_text_bytes = 32;
    auto h = Harness::start("", eo);
    ASSERT_NE(h, nullptr);
    v1::GenerateRequest req = greedy_ids({1, 2}, 1);
    req.set_request_id(std::string(41, 'i'));
    StreamResult r = collect(*h->inference, req, std::chrono::seconds(30));
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(r.status.error_message().find("request_id"), std::string::npos) << r.status.error_message();
    EXPECT_NE(r.status.error_message().find("40"), std::string::npos) << r.status.error_message();
    // The text prompt is refused by its byte length, before tokenization.
    req = greedy_ids({1, 2}, 1);
    req.set_text(std::string(33, 'a'));
    r = collect(*h->inference, req, std::chrono::seconds(30));
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(r.status.error_message().find("text"), std::string::npos) << r.status.error_message();
    EXPECT_NE(r.status.error_message().find("32"), std::string::npos) << r.status.error_message();
    req.set_text(std::string(32, 'a'));
    r = collect(*h->inference, req, std::chrono::seconds(60));
    EXPECT_TRUE(r.status.ok()) << r.status.error_message();
}

TEST(ServerRequestContract, FinalToProtoCarriesDeadline) {
    FinalEvent f;
    f.reason = FinishReason::kDeadline;
    f.completion_tokens = 3;
    f.error = Status(StatusCode::kDeadlineExceeded, "deadline exceeded");
    v1::Final out;
    final_to_proto(std::move(f), &out);
    EXPECT_EQ(out.finish_reason(), v1::FINISH_REASON_DEADLINE);
    EXPECT_EQ(out.usage().completion_tokens(), 3);
}

TEST(ServerRequestContract, PassedDeadlineIsDeadlineExceededAndFreesTheRequest) {
    auto h = Harness::start("");
    ASSERT_NE(h, nullptr);
    // Read as a client that keeps reading past its own deadline would: the server ends the call
    // with DEADLINE_EXCEEDED (and, if the final is still readable, FINISH_REASON_DEADLINE).
    const StreamResult r = collect(*h->inference, greedy_ids({1, 2, 3}, 4000), std::chrono::milliseconds(400));
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << r.status.error_message();
    if (r.final_msg) EXPECT_EQ(r.final_msg->finish_reason(), v1::FINISH_REASON_DEADLINE);
    EXPECT_LT(r.ids.size(), 4000u);
    EXPECT_TRUE(h->wait_kv_idle(std::chrono::seconds(10)));
}

TEST(ServerRequestContract, ReadinessTurnsNotServingWhenTheEngineFails) {
    auto healthy = std::make_shared<std::atomic<bool>>(true);
    ServerOptions so;
    so.engine_healthy = [healthy] { return healthy->load(); };
    so.health_poll = std::chrono::milliseconds(10);
    auto h = Harness::start("", {}, so);
    ASSERT_NE(h, nullptr);
    EXPECT_EQ(health_status(*h->channel, "moe.v1.Inference"), 1);
    EXPECT_FALSE(h->load().failed());
    healthy->store(false);
    int ready = 1;
    for (int i = 0; i < 500 && ready == 1; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        ready = health_status(*h->channel, "moe.v1.Inference");
    }
    EXPECT_EQ(ready, 2);  // readiness: NOT_SERVING
    EXPECT_TRUE(h->load().failed());
    EXPECT_EQ(health_status(*h->channel, ""), 1);  // liveness: the process still answers
    const StreamResult r = collect(*h->inference, greedy_ids({1, 2}, 1), std::chrono::seconds(10));
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAVAILABLE) << r.status.error_message();
    // Latched: the engine coming back does not make a failed server ready again.
    healthy->store(true);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_EQ(health_status(*h->channel, "moe.v1.Inference"), 2);
}

}  // namespace
}  // namespace moe::server::testing
