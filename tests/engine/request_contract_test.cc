// The request contract (#17 item 5): one set of limits for server and engine, one id assigner
// (random, unguessable ids), ids namespaced per submitter, FinishReason::kDeadline.
#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>
#include <set>

#include "engine/engine.h"
#include "engine/request_limits.h"
#include "model/demo_model.h"
#include "moe/cpu_backend.h"

namespace moe {
namespace {

class FinalSink : public RequestSink {
public:
    void on_delta(DeltaEvent&&) override {}
    void on_final(FinalEvent&& f) override {
        std::lock_guard<std::mutex> lock(mu_);
        final_ = std::move(f);
        done_ = true;
        cv_.notify_all();
    }
    bool wait() {
        std::unique_lock<std::mutex> lock(mu_);
        return cv_.wait_for(lock, std::chrono::seconds(60), [&] { return done_; });
    }
    FinalEvent final_event() {
        std::lock_guard<std::mutex> lock(mu_);
        return final_;
    }

private:
    std::mutex mu_;
    std::condition_variable cv_;
    FinalEvent final_;
    bool done_ = false;
};

GenerateParams params(int64_t max_tokens) {
    GenerateParams p;
    p.prompt_ids = {1, 2, 3};
    p.sampling.temperature = 0.0f;
    p.stopping.max_tokens = max_tokens;
    p.stopping.ignore_eos = true;
    return p;
}

class RequestContract : public ::testing::Test {
protected:
    void SetUp() override {
        backend_ = make_cpu_backend({.num_threads = 2});
        auto demo = make_demo_model(*backend_);
        ASSERT_TRUE(demo.ok()) << demo.status().to_string();
        auto e = Engine::create(std::move(demo->model), std::move(demo->tokenizer), {.kv_cache_bytes = 8 << 20});
        ASSERT_TRUE(e.ok()) << e.status().to_string();
        engine_ = std::move(e).value();
        ASSERT_TRUE(engine_->start().ok());
    }
    std::unique_ptr<Backend> backend_;
    std::unique_ptr<Engine> engine_;
};

TEST(RequestIds, AreRandom128BitHex) {
    std::set<std::string> seen;
    for (int i = 0; i < 1000; ++i) {
        StatusOr<std::string> id = new_request_id();
        ASSERT_TRUE(id.ok()) << id.status().to_string();
        ASSERT_EQ(id->size(), 4u + 32u) << *id;
        EXPECT_EQ(id->substr(0, 4), "req-");
        EXPECT_EQ(id->find_first_not_of("0123456789abcdef", 4), std::string::npos) << *id;
        seen.insert(*id);
    }
    EXPECT_EQ(seen.size(), 1000u);  // a sequential or low-entropy assigner would repeat or be "req-0"...
    EXPECT_EQ(seen.count("req-0"), 0u);
}

TEST_F(RequestContract, EngineAssignsRandomIdsAndEnforcesTheSharedLimits) {
    const RequestLimits& lim = engine_->options().limits;
    EXPECT_EQ(lim.max_request_id_bytes, 128u);  // the value the server's API documents
    EXPECT_EQ(lim.max_cache_salt_bytes, 256u);
    auto sink = std::make_shared<FinalSink>();
    StatusOr<std::string> id = engine_->submit(params(1), sink);
    ASSERT_TRUE(id.ok()) << id.status().to_string();
    EXPECT_EQ(id->rfind("req-", 0), 0u);
    EXPECT_EQ(id->size(), 36u);
    ASSERT_TRUE(sink->wait());

    GenerateParams p = params(1);
    p.request_id = std::string(lim.max_request_id_bytes + 1, 'r');
    StatusOr<std::string> r = engine_->submit(p, std::make_shared<FinalSink>());
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("request_id"), std::string::npos);
    EXPECT_NE(r.status().message().find("128"), std::string::npos) << r.status().message();
    p = params(1);
    p.cache_salt = std::string(lim.max_cache_salt_bytes + 1, 's');
    r = engine_->submit(p, std::make_shared<FinalSink>());
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("cache_salt"), std::string::npos);
    EXPECT_NE(r.status().message().find("256"), std::string::npos) << r.status().message();
    p = params(1);
    p.request_id = std::string(lim.max_request_id_bytes, 'r');
    auto at_limit = std::make_shared<FinalSink>();
    ASSERT_TRUE(engine_->submit(p, at_limit).ok());
    ASSERT_TRUE(at_limit->wait());
}

TEST_F(RequestContract, SameIdInTwoNamespacesDoesNotCollideAndCancelStaysInItsNamespace) {
    GenerateParams a = params(200);
    a.request_id = "shared-id";
    a.id_namespace = "tenant-a";
    GenerateParams b = a;
    b.id_namespace = "tenant-b";
    auto sink_a = std::make_shared<FinalSink>();
    auto sink_b = std::make_shared<FinalSink>();
    ASSERT_TRUE(engine_->submit(a, sink_a).ok());
    StatusOr<std::string> rb = engine_->submit(b, sink_b);
    ASSERT_TRUE(rb.ok()) << rb.status().to_string();
    EXPECT_EQ(*rb, "shared-id");
    // The same id again in the same namespace is refused (without echoing the id).
    StatusOr<std::string> dup = engine_->submit(a, std::make_shared<FinalSink>());
    ASSERT_FALSE(dup.ok());
    EXPECT_EQ(dup.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(dup.status().message().find("shared-id"), std::string::npos);
    // No namespace, or another one, does not reach them.
    EXPECT_FALSE(engine_->cancel("shared-id"));
    EXPECT_FALSE(engine_->cancel("shared-id", "tenant-c"));
    // A namespace that spells the other's key with a shifted boundary does not either.
    EXPECT_FALSE(engine_->cancel("b" + std::string("shared-id"), "tenant-"));
    ASSERT_TRUE(engine_->cancel("shared-id", "tenant-a"));
    ASSERT_TRUE(sink_a->wait());
    EXPECT_EQ(sink_a->final_event().reason, FinishReason::kCancelled);
    ASSERT_TRUE(engine_->cancel("shared-id", "tenant-b"));
    ASSERT_TRUE(sink_b->wait());
    EXPECT_EQ(sink_b->final_event().reason, FinishReason::kCancelled);
}

TEST_F(RequestContract, PassedDeadlineFinishesWithKDeadline) {
    GenerateParams p = params(200);
    p.deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(50);
    auto sink = std::make_shared<FinalSink>();
    ASSERT_TRUE(engine_->submit(p, sink).ok());
    ASSERT_TRUE(sink->wait());
    const FinalEvent f = sink->final_event();
    EXPECT_EQ(f.reason, FinishReason::kDeadline);
    EXPECT_EQ(f.error.code(), StatusCode::kDeadlineExceeded);
    EXPECT_LT(f.completion_tokens, 200);
    EXPECT_STREQ(finish_reason_name(FinishReason::kDeadline), "deadline");
    ASSERT_TRUE(engine_->wait_idle(std::chrono::seconds(5)));
    EXPECT_EQ(engine_->load().kv_blocks_free, engine_->load().kv_blocks_total);
}

TEST_F(RequestContract, HealthyUntilTheEngineFails) {
    EXPECT_TRUE(engine_->healthy());
    EXPECT_FALSE(engine_->load().failed);
}

}  // namespace
}  // namespace moe
