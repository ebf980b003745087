// Faults and load through the real server: client cancel, deadline expiry, 200 concurrent
// streams, preemption under a small KV pool, and the transformers reference end to end.
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>

#include "server_harness.h"

namespace moe::server::testing {
namespace {

TEST(ServerFaults, ClientCancelMidStreamFreesKvBlocks) {
    auto h = Harness::start("");
    ASSERT_NE(h, nullptr);
    v1::Load idle;
    ASSERT_TRUE(h->wait_kv_idle(std::chrono::seconds(10), &idle));
    const int64_t n = h->model_info().max_model_len() - 8;
    grpc::ClientContext ctx;
    auto reader = h->inference->Generate(&ctx, greedy_ids({1, 2, 3, 4, 5, 6, 7, 8}, static_cast<int>(n)));
    v1::GenerateResponse msg;
    int deltas = 0;
    while (deltas < 2 && reader->Read(&msg)) deltas += msg.has_delta();
    ASSERT_EQ(deltas, 2);
    EXPECT_LT(h->load().kv_blocks_free(), idle.kv_blocks_total());  // the request holds blocks now
    ctx.TryCancel();
    while (reader->Read(&msg)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
    v1::Load after;
    EXPECT_TRUE(h->wait_kv_idle(std::chrono::seconds(10), &after))
        << "free " << after.kv_blocks_free() << " of " << after.kv_blocks_total() << ", pending "
        << after.num_pending();
    EXPECT_EQ(after.kv_blocks_total(), idle.kv_blocks_total());
    // Still serving.
    const StreamResult ok = collect(*h->inference, greedy_ids({9, 10}, 3), std::chrono::seconds(60));
    EXPECT_TRUE(ok.status.ok()) << ok.status.error_message();
    EXPECT_EQ(ok.ids.size(), 3u);
}

TEST(ServerFaults, ExpiredDeadlineFreesKvBlocks) {
    auto h = Harness::start("");
    ASSERT_NE(h, nullptr);
    const int64_t n = h->model_info().max_model_len() - 4;
    const StreamResult r =
        collect(*h->inference, greedy_ids({1, 2, 3, 4}, static_cast<int>(n)), std::chrono::milliseconds(300));
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << r.status.error_message();
    EXPECT_LT(static_cast<int64_t>(r.ids.size()), n);
    v1::Load after;
    EXPECT_TRUE(h->wait_kv_idle(std::chrono::seconds(10), &after))
        << "free " << after.kv_blocks_free() << " of " << after.kv_blocks_total() << ", pending "
        << after.num_pending();
}

// A callback-API client stream, so that 200 streams need no 200 threads.
class Collector final : public grpc::ClientReadReactor<v1::GenerateResponse> {
public:
    Collector(v1::Inference::Stub& stub, v1::GenerateRequest req, std::function<void()> on_done)
        : req_(std::move(req)), on_done_(std::move(on_done)) {
        ctx_.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
        stub.async()->Generate(&ctx_, &req_, this);
        StartRead(&msg_);
        StartCall();
    }
    void OnReadDone(bool ok) override {
        if (!ok) return;
        if (msg_.has_delta()) ids.insert(ids.end(), msg_.delta().token_ids().begin(), msg_.delta().token_ids().end());
        if (msg_.has_final()) final_msg = msg_.final();
        StartRead(&msg_);
    }
    void OnDone(const grpc::Status& s) override {
        status = s;
        on_done_();
    }

    std::vector<int32_t> ids;
    std::optional<v1::Final> final_msg;
    grpc::Status status;

private:
    grpc::ClientContext ctx_;
    v1::GenerateRequest req_;
    v1::GenerateResponse msg_;
    std::function<void()> on_done_;
};

TEST(ServerLoad, TwoHundredConcurrentStreamsCompleteWithTheRightLengths) {
    auto h = Harness::start("");
    ASSERT_NE(h, nullptr);
    const int64_t vocab = h->model_info().vocab_size();
    constexpr int kStreams = 200;
    std::mt19937 rng(7);
    std::mutex mu;
    std::condition_variable cv;
    int done = 0;
    std::vector<std::unique_ptr<Collector>> streams;
    std::vector<int> want(kStreams);
    for (int i = 0; i < kStreams; ++i) {
        std::vector<int32_t> prompt(2 + rng() % 7);
        for (auto& id : prompt) id = static_cast<int32_t>(rng() % vocab);
        want[i] = 1 + static_cast<int>(rng() % 6);
        v1::GenerateRequest req = greedy_ids(prompt, want[i]);
        req.set_request_id("c" + std::to_string(i));
        streams.push_back(std::make_unique<Collector>(*h->inference, req, [&] {
            std::lock_guard<std::mutex> lock(mu);
            ++done;
            cv.notify_all();
        }));
    }
    {
        std::unique_lock<std::mutex> lock(mu);
        ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(150), [&] { return done == kStreams; }))
            << done << " of " << kStreams << " finished";
    }
    for (int i = 0; i < kStreams; ++i) {
        SCOPED_TRACE("stream " + std::to_string(i));
        EXPECT_TRUE(streams[i]->status.ok()) << streams[i]->status.error_message();
        EXPECT_EQ(static_cast<int>(streams[i]->ids.size()), want[i]);
        ASSERT_TRUE(streams[i]->final_msg.has_value());
        EXPECT_EQ(streams[i]->final_msg->finish_reason(), v1::FINISH_REASON_LENGTH);
        EXPECT_EQ(streams[i]->final_msg->usage().completion_tokens(), want[i]);
    }
    EXPECT_TRUE(h->wait_kv_idle(std::chrono::seconds(10)));
}

struct Reference {
    std::vector<std::vector<int32_t>> prompts;
    std::vector<std::vector<int32_t>> greedy;
};

Reference load_reference(const std::string& dir) {
    std::ifstream in(dir + "/reference.json");
    const nlohmann::json j = nlohmann::json::parse(in);
    return {j.at("prompts").get<std::vector<std::vector<int32_t>>>(),
            j.at("greedy").get<std::vector<std::vector<int32_t>>>()};
}

TEST(ServerEndToEnd, Qwen3MoeFixtureGreedyMatchesTransformers) {
    const std::string dir = fixture_dir("qwen3_moe");
    auto h = Harness::start(dir);
    ASSERT_NE(h, nullptr);
    const Reference ref = load_reference(dir);
    ASSERT_EQ(ref.prompts.size(), ref.greedy.size());
    ASSERT_FALSE(ref.prompts.empty());
    // One at a time, then all at once (batched together).
    for (size_t i = 0; i < ref.prompts.size(); ++i) {
        const StreamResult r =
            collect(*h->inference, greedy_ids(ref.prompts[i], static_cast<int>(ref.greedy[i].size())),
                    std::chrono::seconds(60));
        ASSERT_TRUE(r.status.ok()) << r.status.error_message();
        EXPECT_EQ(r.ids, ref.greedy[i]) << "prompt " << i;
        EXPECT_TRUE(r.text.empty());  // no tokenizer in the fixture
    }
    std::vector<StreamResult> results(ref.prompts.size());
    std::vector<std::thread> threads;
    for (size_t i = 0; i < ref.prompts.size(); ++i)
        threads.emplace_back([&, i] {
            results[i] = collect(*h->inference, greedy_ids(ref.prompts[i], static_cast<int>(ref.greedy[i].size())),
                                 std::chrono::seconds(60));
        });
    for (auto& t : threads) t.join();
    for (size_t i = 0; i < ref.prompts.size(); ++i) {
        ASSERT_TRUE(results[i].status.ok()) << results[i].status.error_message();
        EXPECT_EQ(results[i].ids, ref.greedy[i]) << "prompt " << i << " (concurrent)";
    }
}

TEST(ServerEndToEnd, ModelWithoutTokenizerRejectsText) {
    auto h = Harness::start(fixture_dir("qwen3_moe"));
    ASSERT_NE(h, nullptr);
    EXPECT_FALSE(h->model_info().has_tokenizer());
    v1::GenerateRequest req;
    req.set_text("hello");
    const StreamResult r = collect(*h->inference, req, std::chrono::seconds(10));
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(r.status.error_message().find("text"), std::string::npos) << r.status.error_message();
    EXPECT_NE(r.status.error_message().find("tokenizer"), std::string::npos) << r.status.error_message();
    v1::GenerateRequest stop_req = greedy_ids({1, 2}, 2);
    stop_req.mutable_stopping()->add_stop("x");
    const StreamResult r2 = collect(*h->inference, stop_req, std::chrono::seconds(10));
    EXPECT_EQ(r2.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(r2.status.error_message().find("stopping.stop"), std::string::npos) << r2.status.error_message();
}

TEST(ServerLoad, SmallKvPoolPreemptsAndGreedyOutputsMatchRunAlone) {
    const std::string dir = fixture_dir("qwen3_moe");
    // Bytes of one KV block (K and V, every layer, f32), from the fixture's config.
    std::ifstream in(dir + "/config.json");
    const nlohmann::json cfg = nlohmann::json::parse(in);
    const int64_t layers = cfg.at("num_hidden_layers").get<int64_t>();
    const int64_t kv_heads = cfg.at("num_key_value_heads").get<int64_t>();
    const int64_t head_dim = cfg.contains("head_dim")
                                 ? cfg.at("head_dim").get<int64_t>()
                                 : cfg.at("hidden_size").get<int64_t>() / cfg.at("num_attention_heads").get<int64_t>();
    constexpr int64_t kBlock = 16;
    const int64_t block_bytes = 2 * layers * kv_heads * head_dim * kBlock * 4;
    constexpr int kRequests = 8;
    constexpr int kPrompt = 20, kOut = 44;  // 64 tokens = 4 blocks each, 32 blocks offered
    EngineOptions eo;
    eo.kv_block_size = kBlock;
    eo.kv_cache_bytes = block_bytes * 10;  // room for two requests and a half
    eo.prefix_caching = false;
    auto h = Harness::start(dir, eo);
    ASSERT_NE(h, nullptr);
    const v1::Load idle = h->load();
    ASSERT_GE(idle.kv_blocks_total(), 4) << "the pool must hold one whole request";
    ASSERT_LT(idle.kv_blocks_total(), kRequests * 4) << "the pool must be smaller than the offered load";

    std::mt19937 rng(11);
    const int64_t vocab = h->model_info().vocab_size();
    std::vector<std::vector<int32_t>> prompts(kRequests, std::vector<int32_t>(kPrompt));
    for (auto& p : prompts)
        for (auto& id : p) id = static_cast<int32_t>(rng() % vocab);
    std::vector<std::vector<int32_t>> alone(kRequests);
    for (int i = 0; i < kRequests; ++i) {
        const StreamResult r = collect(*h->inference, greedy_ids(prompts[i], kOut), std::chrono::seconds(60));
        ASSERT_TRUE(r.status.ok()) << r.status.error_message();
        ASSERT_EQ(r.ids.size(), static_cast<size_t>(kOut));
        alone[i] = r.ids;
    }
    EXPECT_EQ(h->load().num_preemptions(), 0);
    std::vector<StreamResult> together(kRequests);
    std::vector<std::thread> threads;
    for (int i = 0; i < kRequests; ++i)
        threads.emplace_back(
            [&, i] { together[i] = collect(*h->inference, greedy_ids(prompts[i], kOut), std::chrono::seconds(120)); });
    for (auto& t : threads) t.join();
    for (int i = 0; i < kRequests; ++i) {
        ASSERT_TRUE(together[i].status.ok()) << together[i].status.error_message();
        EXPECT_EQ(together[i].ids, alone[i]) << "request " << i;
    }
    const v1::Load l = h->load();
    EXPECT_GT(l.num_preemptions(), 0) << "offered " << kRequests * 4 << " blocks to a pool of " << l.kv_blocks_total();
    EXPECT_TRUE(h->wait_kv_idle(std::chrono::seconds(10)));
}

}  // namespace
}  // namespace moe::server::testing
