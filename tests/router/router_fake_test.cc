// The router against in-test fake workers (fake_worker.h): routing by cached prefix, the prefill
// retry, a decode worker lost mid-stream, cancel, the signature check, the internal secret.
#include <gtest/gtest.h>

#include <thread>

#include "fake_worker.h"
#include "moe/v1/inference.grpc.pb.h"
#include "router/router.h"
#include "router/routing_policy.h"

namespace moe::router::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr const char* kSecret = "s3cret";

struct Cluster {
    std::vector<std::unique_ptr<FakeWorker>> prefill, decode;
    std::unique_ptr<Router> router;
    std::unique_ptr<v1::Inference::Stub> inference;
    std::unique_ptr<v1::Control::Stub> control;

    static StatusOr<std::unique_ptr<Cluster>> start(int num_prefill, int num_decode,
                                                    const std::string& model = "qwen3_moe") {
        auto c = std::make_unique<Cluster>();
        const v1::ModelSignature sig = signature_of(fixture_dir(model));
        RouterOptions o;
        o.port = 0;
        o.model_dir = fixture_dir(model);
        o.internal_secret = kSecret;
        o.connect_timeout = seconds(20);
        for (int i = 0; i < num_prefill; ++i) {
            c->prefill.push_back(std::make_unique<FakeWorker>(v1::WORKER_ROLE_PREFILL, sig, kSecret));
            o.prefill.push_back(c->prefill.back()->address());
        }
        for (int i = 0; i < num_decode; ++i) {
            c->decode.push_back(std::make_unique<FakeWorker>(v1::WORKER_ROLE_DECODE, sig, kSecret));
            o.decode.push_back(c->decode.back()->address());
        }
        MOE_ASSIGN_OR_RETURN(c->router, Router::start(o));
        auto ch = grpc::CreateChannel(c->router->address(), grpc::InsecureChannelCredentials());
        c->inference = v1::Inference::NewStub(ch);
        c->control = v1::Control::NewStub(ch);
        return c;
    }
};

v1::GenerateRequest request_of(std::vector<int32_t> ids, int max_tokens = 3) {
    v1::GenerateRequest r;
    for (int32_t id : ids) r.mutable_token_ids()->add_ids(id);
    r.mutable_stopping()->set_max_tokens(max_tokens);
    return r;
}

struct Outcome {
    std::vector<int32_t> tokens;
    bool final_seen = false;
    grpc::Status status;
    std::string request_id;
};

Outcome generate(v1::Inference::Stub& stub, const v1::GenerateRequest& req, seconds timeout = seconds(30)) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + timeout);
    Outcome o;
    auto reader = stub.Generate(&ctx, req);
    v1::GenerateResponse m;
    while (reader->Read(&m)) {
        o.request_id = m.request_id();
        if (m.has_delta()) o.tokens.insert(o.tokens.end(), m.delta().token_ids().begin(), m.delta().token_ids().end());
        if (m.has_final()) o.final_seen = true;
    }
    o.status = reader->Finish();
    return o;
}

// Waits until the router's GetLoad shows `n` known cached blocks for worker `address`.
bool wait_known(v1::Control::Stub& control, const std::string& address, int64_t n) {
    const auto until = std::chrono::steady_clock::now() + seconds(20);
    while (std::chrono::steady_clock::now() < until) {
        grpc::ClientContext ctx;
        v1::Load load;
        if (control.GetLoad(&ctx, v1::GetLoadRequest(), &load).ok())
            for (const auto& w : load.workers())
                if (w.address() == address && w.known_cached_blocks() == n) return true;
        std::this_thread::sleep_for(milliseconds(10));
    }
    return false;
}

TEST(RouterFake, PrefillThenDecodeRelaysTheStream) {
    auto c = Cluster::start(1, 1);
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    auto req = request_of({1, 2, 3, 4, 5, 6, 7, 8, 9}, 3);
    req.set_request_id("mine");
    const Outcome o = generate(*(*c)->inference, req);
    ASSERT_TRUE(o.status.ok()) << o.status.error_message();
    EXPECT_EQ(o.tokens, (std::vector<int32_t>{42, 101, 102}));
    EXPECT_TRUE(o.final_seen);
    EXPECT_EQ(o.request_id, "mine");  // the client's id, not the router's
    FakeWorker& p = *(*c)->prefill[0];
    FakeWorker& d = *(*c)->decode[0];
    std::lock_guard<std::mutex> lock(p.mu);
    // The decode worker got the prefill result and the prefill worker's address; the request
    // reached the workers under an id of the router's.
    EXPECT_EQ(d.last_decode.prefill_worker(), p.address());
    EXPECT_EQ(d.last_decode.prefill().handoff_id(), p.last_prefill.handoff_id());
    EXPECT_EQ(p.last_prefill.decode_worker(), d.address());
    EXPECT_NE(p.last_prefill.request().request_id(), "mine");
    EXPECT_TRUE(p.released.empty());  // the decode worker acknowledges, not the router
}

TEST(RouterFake, FinishedAtTheFirstTokenNeedsNoDecode) {
    auto c = Cluster::start(1, 1);
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    (*c)->prefill[0]->prefill_mode = FakeWorker::PrefillMode::kFinished;
    const Outcome o = generate(*(*c)->inference, request_of({1, 2, 3}, 1));
    ASSERT_TRUE(o.status.ok()) << o.status.error_message();
    EXPECT_EQ(o.tokens, std::vector<int32_t>{42});
    EXPECT_TRUE(o.final_seen);
    EXPECT_EQ((*c)->decode[0]->decodes.load(), 0);
}

TEST(RouterFake, RequestGoesToThePrefillWorkerHoldingItsPrefix) {
    auto c = Cluster::start(2, 1);
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    std::vector<int32_t> prompt(13);
    for (int i = 0; i < 13; ++i) prompt[static_cast<size_t>(i)] = 7 + i;
    // Worker 1 reports the prompt's first two blocks (block size 4) as cached, salt included.
    const auto hashes = prompt_block_hashes(prompt, 4, "t1");
    ASSERT_EQ(hashes.size(), 3u);
    FakeWorker& p1 = *(*c)->prefill[1];
    p1.hub->publish({.stored = {hashes[0], hashes[1]}}, {.kv_blocks_total = 100, .kv_blocks_free = 90});
    ASSERT_TRUE(wait_known(*(*c)->control, p1.address(), 2));
    for (int round = 0; round < 3; ++round) {
        auto req = request_of(prompt, 2);
        req.set_cache_salt("t1");
        ASSERT_TRUE(generate(*(*c)->inference, req).status.ok());
    }
    EXPECT_EQ(p1.prefills.load(), 3);
    EXPECT_EQ((*c)->prefill[0]->prefills.load(), 0);
    // Another salt: no overlap anywhere; the tie goes to the first worker (more free blocks).
    auto req = request_of(prompt, 2);
    req.set_cache_salt("t2");
    ASSERT_TRUE(generate(*(*c)->inference, req).status.ok());
    EXPECT_EQ((*c)->prefill[0]->prefills.load(), 1);
    // Evicted there: it no longer attracts the prompt.
    p1.hub->publish({.evicted = {hashes[0]}}, {.kv_blocks_total = 100, .kv_blocks_free = 100});
    ASSERT_TRUE(wait_known(*(*c)->control, p1.address(), 1));
    auto again = request_of(prompt, 2);
    again.set_cache_salt("t1");
    ASSERT_TRUE(generate(*(*c)->inference, again).status.ok());
    EXPECT_EQ((*c)->prefill[0]->prefills.load(), 2);
}

TEST(RouterFake, FailedPrefillIsRetriedOnceOnAnotherWorker) {
    auto c = Cluster::start(2, 1);
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    (*c)->prefill[0]->prefill_mode = FakeWorker::PrefillMode::kUnavailable;
    const Outcome o = generate(*(*c)->inference, request_of({1, 2, 3, 4, 5}, 2));
    ASSERT_TRUE(o.status.ok()) << o.status.error_message();
    EXPECT_EQ((*c)->prefill[0]->prefills.load(), 1);
    EXPECT_EQ((*c)->prefill[1]->prefills.load(), 1);
    // Both down: one retry only, then the client gets the worker's UNAVAILABLE.
    (*c)->prefill[1]->prefill_mode = FakeWorker::PrefillMode::kUnavailable;
    const Outcome bad = generate(*(*c)->inference, request_of({1, 2, 3, 4, 5}, 2));
    EXPECT_EQ(bad.status.error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_EQ((*c)->prefill[0]->prefills.load() + (*c)->prefill[1]->prefills.load(), 4);
}

TEST(RouterFake, KilledPrefillWorkerIsRoutedAround) {
    auto c = Cluster::start(2, 1);
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    (*c)->prefill[0]->stop();
    for (int i = 0; i < 2; ++i) {
        const Outcome o = generate(*(*c)->inference, request_of({1, 2, 3, 4, 5}, 2));
        ASSERT_TRUE(o.status.ok()) << o.status.error_message();
    }
    EXPECT_EQ((*c)->prefill[1]->prefills.load(), 2);
}

TEST(RouterFake, DecodeWorkerLostMidStreamEndsUnavailableAndReleasesTheHandoff) {
    auto c = Cluster::start(1, 1);
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    (*c)->decode[0]->decode_mode = FakeWorker::DecodeMode::kDieAfterFirst;
    const auto t0 = std::chrono::steady_clock::now();
    const Outcome o = generate(*(*c)->inference, request_of({1, 2, 3, 4, 5}, 5));
    EXPECT_LT(std::chrono::steady_clock::now() - t0, seconds(20));
    EXPECT_EQ(o.status.error_code(), grpc::StatusCode::UNAVAILABLE) << o.status.error_message();
    EXPECT_EQ(o.tokens, std::vector<int32_t>{42});
    FakeWorker& p = *(*c)->prefill[0];
    std::lock_guard<std::mutex> lock(p.mu);
    ASSERT_EQ(p.released.size(), 1u);
    EXPECT_EQ(p.released[0], p.last_prefill.handoff_id());
}

TEST(RouterFake, ClientCancelReachesTheDecodeWorker) {
    auto c = Cluster::start(1, 1);
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    FakeWorker& d = *(*c)->decode[0];
    d.decode_mode = FakeWorker::DecodeMode::kHangAfterFirst;
    grpc::ClientContext ctx;
    auto reader = (*c)->inference->Generate(&ctx, request_of({1, 2, 3}, 5));
    v1::GenerateResponse m;
    ASSERT_TRUE(reader->Read(&m));  // the first token is out: the decode call is live
    ctx.TryCancel();
    while (reader->Read(&m)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
    const auto until = std::chrono::steady_clock::now() + seconds(20);
    while (d.decode_cancels.load() == 0 && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(milliseconds(10));
    EXPECT_EQ(d.decode_cancels.load(), 1);
    // The router releases the prefill side's handoff at once.
    FakeWorker& p = *(*c)->prefill[0];
    while (std::chrono::steady_clock::now() < until) {
        {
            std::lock_guard<std::mutex> lock(p.mu);
            if (!p.released.empty()) break;
        }
        std::this_thread::sleep_for(milliseconds(10));
    }
    std::lock_guard<std::mutex> lock(p.mu);
    EXPECT_EQ(p.released.size(), 1u);
}

TEST(RouterFake, ClientDeadlineReachesTheWorkers) {
    auto c = Cluster::start(1, 1);
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    FakeWorker& d = *(*c)->decode[0];
    d.decode_mode = FakeWorker::DecodeMode::kHangAfterFirst;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + milliseconds(1500));
    auto reader = (*c)->inference->Generate(&ctx, request_of({1, 2, 3}, 5));
    v1::GenerateResponse m;
    while (reader->Read(&m)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
    // The decode call carried the client's deadline: the worker saw it end.
    const auto until = std::chrono::steady_clock::now() + seconds(20);
    while (d.decode_cancels.load() == 0 && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(milliseconds(10));
    EXPECT_EQ(d.decode_cancels.load(), 1);
}

TEST(RouterFake, WorkerWithAnotherModelIsRefused) {
    const v1::ModelSignature sig = signature_of(fixture_dir("qwen3_moe"));
    v1::ModelSignature other = sig;
    other.set_kv_dtype("bf16");
    FakeWorker p(v1::WORKER_ROLE_PREFILL, sig), d(v1::WORKER_ROLE_DECODE, other);
    RouterOptions o;
    o.port = 0;
    o.model_dir = fixture_dir("qwen3_moe");
    o.prefill = {p.address()};
    o.decode = {d.address()};
    o.connect_timeout = seconds(20);
    auto r = Router::start(o);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(r.status().message().find("kv_dtype"), std::string::npos) << r.status().message();
    // A worker of another model than the router's config.json.
    FakeWorker q(v1::WORKER_ROLE_DECODE, signature_of(fixture_dir("mixtral")));
    o.decode = {q.address()};
    r = Router::start(o);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("different model"), std::string::npos) << r.status().message();
    // A decode worker given as a prefill worker.
    o.prefill = {d.address()};
    o.decode = {p.address()};
    r = Router::start(o);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("serves role"), std::string::npos) << r.status().message();
}

TEST(RouterFake, WrongInternalSecretIsRefused) {
    const v1::ModelSignature sig = signature_of(fixture_dir("qwen3_moe"));
    FakeWorker p(v1::WORKER_ROLE_PREFILL, sig, kSecret), d(v1::WORKER_ROLE_DECODE, sig, kSecret);
    RouterOptions o;
    o.port = 0;
    o.model_dir = fixture_dir("qwen3_moe");
    o.prefill = {p.address()};
    o.decode = {d.address()};
    o.internal_secret = "wrong";
    o.connect_timeout = seconds(20);
    auto r = Router::start(o);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("Describe failed"), std::string::npos) << r.status().message();
}

TEST(RouterFake, BadRequestsAreRefusedByTheRouter) {
    auto c = Cluster::start(1, 1);
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    v1::GenerateRequest req = request_of({1, 2, 3}, 2);
    req.mutable_token_ids()->set_ids(1, 1 << 30);  // beyond the vocabulary
    const Outcome o = generate(*(*c)->inference, req);
    EXPECT_EQ(o.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(o.status.error_message().find("token_ids"), std::string::npos) << o.status.error_message();
    EXPECT_EQ((*c)->prefill[0]->prefills.load(), 0);
    // GetModelInfo answers from the router's config.json.
    grpc::ClientContext ctx;
    v1::ModelInfo info;
    ASSERT_TRUE((*c)->control->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info).ok());
    EXPECT_EQ(info.name(), "qwen3_moe");
    EXPECT_GT(info.vocab_size(), 0);
}

}  // namespace
}  // namespace moe::router::testing
