// Prefill/decode disaggregation at the engine level: a prefill engine P and a decode engine D
// in one process, the KV moving over the in-process transport (src/disagg/kv_transport.h).
// The handoff is wired here as the worker service wires it over gRPC: P's on_handoff ->
// describe() -> D.submit_prefilled(pull = D's transport, release = P.release_handoff).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "disagg/kv_transport.h"
#include "engine/engine.h"
#include "engine/engine_test_util.h"
#include "model/demo_model.h"
#include "moe/cpu_backend.h"

namespace moe {
namespace {

using namespace moe::testing;
using namespace std::chrono_literals;

// P's sink: the handoff event, or a final when the first token ended the request.
class PrefillSink : public CollectSink {
public:
    void on_handoff(HandoffEvent&& ev) override {
        std::lock_guard<std::mutex> lock(mu_);
        event_ = std::move(ev);
        handed_off_ = true;
        cv_.notify_all();
    }
    void on_final(FinalEvent&& f) override {
        CollectSink::on_final(std::move(f));
        std::lock_guard<std::mutex> lock(mu_);
        cv_.notify_all();
    }
    // True: handed off; false: a final came (or the timeout).
    bool wait_handoff(std::chrono::seconds timeout = 60s) {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait_for(lock, timeout, [&] { return handed_off_ || num_finals() > 0; });
        return handed_off_;
    }
    HandoffEvent event() {
        std::lock_guard<std::mutex> lock(mu_);
        return event_;
    }

private:
    std::mutex mu_;
    std::condition_variable cv_;
    HandoffEvent event_;
    bool handed_off_ = false;
};

template <class F>
bool eventually(F f, std::chrono::milliseconds timeout = 20s) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
        if (f()) return true;
        std::this_thread::sleep_for(5ms);
    }
    return f();
}

class DisaggEngineTest : public ::testing::Test {
protected:
    void SetUp() override {
        backend_p_ = make_cpu_backend({.num_threads = 1});
        backend_d_ = make_cpu_backend({.num_threads = 1});
        backend_a_ = make_cpu_backend({.num_threads = 1});
    }
    void TearDown() override {
        // Transports first: they point into the engines' caches.
        tp_.reset();
        td_.reset();
    }
    std::unique_ptr<Engine> make(Backend& backend, const EngineOptions& opt, bool demo = false) {
        std::unique_ptr<MoeTransformer> model;
        std::unique_ptr<Tokenizer> tokenizer;
        if (demo) {
            auto d = make_demo_model(backend);
            EXPECT_TRUE(d.ok()) << d.status().to_string();
            model = std::move(d->model);
            tokenizer = std::move(d->tokenizer);
        } else {
            auto m = MoeTransformer::load(fixture_dir("qwen3_moe"), backend, {});
            EXPECT_TRUE(m.ok()) << m.status().to_string();
            model = std::move(m).value();
        }
        auto engine = Engine::create(std::move(model), std::move(tokenizer), opt);
        EXPECT_TRUE(engine.ok()) << engine.status().to_string();
        EXPECT_TRUE((*engine)->start().ok());
        return std::move(engine).value();
    }
    void start(EngineOptions opt = {.kv_cache_bytes = 4 << 20, .kv_block_size = 4}, bool demo = false) {
        p_ = make(*backend_p_, opt, demo);
        d_ = make(*backend_d_, opt, demo);
        static std::atomic<int> n{0};
        const std::string tag = std::to_string(n++);
        auto tp = disagg::make_inproc_transport(p_->kv_cache(), "P" + tag);
        auto td = disagg::make_inproc_transport(d_->kv_cache(), "D" + tag);
        ASSERT_TRUE(tp.ok() && td.ok());
        tp_ = std::move(tp).value();
        td_ = std::move(td).value();
        idle_p_ = p_->load().kv_blocks_free;
        idle_d_ = d_->load().kv_blocks_free;
    }

    // Runs the prompt on P; returns the handoff (empty handoff_id: P finished the request).
    HandoffEvent prefill(GenerateParams params, std::shared_ptr<PrefillSink>* sink_out = nullptr,
                         std::chrono::milliseconds lease = 30s) {
        static std::atomic<int> n{0};
        params.handoff = HandoffRequest{.handoff_id = "h" + std::to_string(n++), .lease = lease};
        auto sink = std::make_shared<PrefillSink>();
        EXPECT_TRUE(p_->submit(params, sink).ok());
        if (sink_out) *sink_out = sink;
        if (!sink->wait_handoff()) return {};
        return sink->event();
    }

    struct DecodeStats {
        std::atomic<int64_t> pulled_blocks{0};
        std::atomic<int> pulls{0};
        std::atomic<int> releases{0};
    };

    // D side of the handoff; `lie` edits the descriptor the way a lying peer would.
    StatusOr<std::string> decode(GenerateParams params, const HandoffEvent& ev, std::shared_ptr<CollectSink> sink,
                                 DecodeStats* stats = nullptr, std::function<void(disagg::KvSourceDesc&)> lie = nullptr,
                                 std::function<void(const std::atomic<bool>&)> during_pull = nullptr) {
        auto desc = tp_->describe(ev.block_ids);
        EXPECT_TRUE(desc.ok());
        if (lie) lie(*desc);
        PrefilledParams pp;
        pp.params = std::move(params);
        pp.params.prompt_ids = ev.prompt_ids;
        pp.first_token = ev.first_token;
        pp.seed = ev.seed;
        pp.random_draws = ev.random_draws;
        pp.cached_prompt_tokens = ev.cached_prompt_tokens;
        pp.queue_seconds = ev.queue_seconds;
        pp.ttft_seconds = ev.ttft_seconds;
        pp.num_source_blocks = static_cast<int64_t>(ev.block_ids.size());
        pp.room_deadline = std::chrono::steady_clock::now() + 30s;
        disagg::KvTransport* td = td_.get();
        Engine* p = p_.get();
        const std::string id = ev.handoff_id;
        pp.pull = [td, d = std::move(*desc), stats, during_pull](
                      std::span<const int32_t> src, std::span<const int32_t> dst, const std::atomic<bool>& cancelled) {
            if (stats) {
                stats->pulls++;
                stats->pulled_blocks += static_cast<int64_t>(src.size());
            }
            if (during_pull) during_pull(cancelled);
            return td->pull(d, src, dst, cancelled);
        };
        pp.release = [p, id, stats] {
            if (stats) stats->releases++;
            return p->release_handoff(id) ? ok_status() : unavailable("prefill lease " + id + " is gone");
        };
        return d_->submit_prefilled(std::move(pp), std::move(sink));
    }

    std::unique_ptr<Backend> backend_p_, backend_d_, backend_a_;
    std::unique_ptr<Engine> p_, d_;
    std::unique_ptr<disagg::KvTransport> tp_, td_;
    int64_t idle_p_ = 0, idle_d_ = 0;
};

GenerateParams greedy(std::vector<int32_t> prompt, int64_t max_tokens) {
    GenerateParams p;
    p.prompt_ids = std::move(prompt);
    p.sampling.temperature = 0.0f;
    p.stopping.max_tokens = max_tokens;
    p.stopping.ignore_eos = true;
    return p;
}

TEST_F(DisaggEngineTest, GreedyTokensEqualTransformersAndBothPoolsReturnToIdle) {
    start();
    const Reference ref = load_reference("qwen3_moe");
    for (size_t i = 0; i < ref.prompts.size(); ++i) {
        HandoffEvent ev = prefill(greedy(ref.prompts[i], 16));
        ASSERT_FALSE(ev.handoff_id.empty()) << "prompt " << i << " was not handed off";
        EXPECT_EQ(ev.first_token.token, ref.greedy[i][0]);
        EXPECT_EQ(ev.random_draws, 1u);
        EXPECT_EQ(static_cast<int64_t>(ev.block_ids.size()), (static_cast<int64_t>(ref.prompts[i].size()) + 3) / 4);
        EXPECT_EQ(ev.block_hashes.size(), ref.prompts[i].size() / 4);
        EXPECT_EQ(p_->load().handoffs, 1);
        EXPECT_LT(p_->load().kv_blocks_free, idle_p_);  // held under the lease
        auto sink = std::make_shared<CollectSink>();
        DecodeStats stats;
        ASSERT_TRUE(decode(greedy(ref.prompts[i], 16), ev, sink, &stats).ok());
        ASSERT_TRUE(sink->wait());
        EXPECT_EQ(sink->tokens(), ref.greedy[i]) << "prompt " << i;
        const FinalEvent f = sink->final_event();
        EXPECT_EQ(f.reason, FinishReason::kLength) << f.error.to_string();
        EXPECT_EQ(f.completion_tokens, 16);
        EXPECT_EQ(f.prompt_tokens, static_cast<int64_t>(ref.prompts[i].size()));
        EXPECT_EQ(stats.releases.load(), 1);
        EXPECT_TRUE(eventually([&] { return p_->load().handoffs == 0 && p_->load().kv_blocks_free == idle_p_; }));
        EXPECT_TRUE(eventually([&] { return d_->load().kv_blocks_free == idle_d_ && d_->load().receiving == 0; }));
    }
    // Every pull is counted in the decode engine's metrics: 3 prompts of 9, 17, 30 tokens are
    // 3 + 5 + 8 blocks of 4 tokens x 3 layers x (K, V) x 2 heads x 32 x f32.
    const std::string text = metrics::render_text(d_->metrics());
    EXPECT_NE(text.find("moe:kv_imports_total{model_name=\"moeserve\"} 3"), std::string::npos) << text;
    EXPECT_NE(text.find("moe:kv_import_bytes_total{model_name=\"moeserve\"} " + std::to_string(16 * 6 * 1024)),
              std::string::npos)
        << text;
}

TEST_F(DisaggEngineTest, SameSeedGivesTheTokensOfAggregatedServing) {
    start();
    auto aggregated = make(*backend_a_, {.kv_cache_bytes = 4 << 20, .kv_block_size = 4});
    const Reference ref = load_reference("qwen3_moe");
    for (uint64_t seed : {7u, 1234u}) {
        GenerateParams params = greedy(ref.prompts[1], 12);
        params.sampling.temperature = 1.3f;
        params.sampling.top_p = 0.95f;
        params.sampling.presence_penalty = 0.5f;
        params.sampling.repetition_penalty = 1.1f;
        params.sampling.seed = seed;
        auto agg = std::make_shared<CollectSink>();
        ASSERT_TRUE(aggregated->submit(params, agg).ok());
        ASSERT_TRUE(agg->wait());
        HandoffEvent ev = prefill(params);
        ASSERT_FALSE(ev.handoff_id.empty());
        EXPECT_EQ(ev.seed, seed);
        auto sink = std::make_shared<CollectSink>();
        ASSERT_TRUE(decode(params, ev, sink).ok());
        ASSERT_TRUE(sink->wait());
        EXPECT_EQ(sink->tokens(), agg->tokens()) << "seed " << seed;
        EXPECT_EQ(sink->tokens().size(), 12u);
    }
    // Without a seed, P resolves one and D continues P's stream: the same as an aggregated run
    // given that seed.
    GenerateParams unseeded = greedy(ref.prompts[0], 10);
    unseeded.sampling.temperature = 1.0f;
    HandoffEvent ev = prefill(unseeded);
    ASSERT_FALSE(ev.handoff_id.empty());
    auto sink = std::make_shared<CollectSink>();
    ASSERT_TRUE(decode(unseeded, ev, sink).ok());
    ASSERT_TRUE(sink->wait());
    GenerateParams replay = unseeded;
    replay.sampling.seed = ev.seed;
    auto agg = std::make_shared<CollectSink>();
    ASSERT_TRUE(aggregated->submit(replay, agg).ok());
    ASSERT_TRUE(agg->wait());
    EXPECT_EQ(sink->tokens(), agg->tokens());
}

TEST_F(DisaggEngineTest, TheDecodeSidesOwnPrefixCacheMeansFewerBlocksTravel) {
    start();
    const Reference ref = load_reference("qwen3_moe");
    const std::vector<int32_t>& prompt = ref.prompts[2];  // 30 tokens: 7 full blocks of 4 + 2
    DecodeStats first, second;
    for (DecodeStats* stats : {&first, &second}) {
        HandoffEvent ev = prefill(greedy(prompt, 8));
        ASSERT_FALSE(ev.handoff_id.empty());
        auto sink = std::make_shared<CollectSink>();
        ASSERT_TRUE(decode(greedy(prompt, 8), ev, sink, stats).ok());
        ASSERT_TRUE(sink->wait());
        EXPECT_EQ(sink->tokens(), std::vector<int32_t>(ref.greedy[2].begin(), ref.greedy[2].begin() + 8));
    }
    EXPECT_EQ(first.pulled_blocks.load(), 8);   // every block of the prompt
    EXPECT_EQ(second.pulled_blocks.load(), 1);  // the partial last block only: 7 were cached on D
    EXPECT_EQ(second.releases.load(), 1);
    EXPECT_TRUE(eventually([&] { return p_->load().kv_blocks_free == idle_p_; }));
    EXPECT_TRUE(eventually([&] { return d_->load().kv_blocks_free == idle_d_; }));

    // A prompt whose every block is cached on D (a multiple of the block size): nothing travels,
    // the lease is still released.
    std::vector<int32_t> aligned(prompt.begin(), prompt.begin() + 28);
    DecodeStats third, fourth;
    for (DecodeStats* stats : {&third, &fourth}) {
        HandoffEvent ev = prefill(greedy(aligned, 4));
        ASSERT_FALSE(ev.handoff_id.empty());
        auto sink = std::make_shared<CollectSink>();
        ASSERT_TRUE(decode(greedy(aligned, 4), ev, sink, stats).ok());
        ASSERT_TRUE(sink->wait());
        EXPECT_EQ(sink->final_event().reason, FinishReason::kLength);
    }
    EXPECT_EQ(fourth.pulls.load(), 0);
    // The acknowledgement runs on the import thread, after the request may have finished.
    EXPECT_TRUE(eventually([&] { return fourth.releases.load() == 1; }));
    EXPECT_TRUE(eventually([&] { return p_->load().kv_blocks_free == idle_p_ && p_->load().handoffs == 0; }));
}

TEST_F(DisaggEngineTest, CancelDuringTheTransferFreesBlocksOnBothSides) {
    start();
    const Reference ref = load_reference("qwen3_moe");
    HandoffEvent ev = prefill(greedy(ref.prompts[2], 16));
    ASSERT_FALSE(ev.handoff_id.empty());
    std::atomic<bool> in_pull{false};
    std::atomic<bool> saw_cancel{false};
    DecodeStats stats;
    auto sink = std::make_shared<CollectSink>();
    GenerateParams params = greedy(ref.prompts[2], 16);
    params.request_id = "victim";
    // The pull blocks (as a slow network would) until the request is cancelled.
    ASSERT_TRUE(decode(params, ev, sink, &stats, nullptr, [&](const std::atomic<bool>& cancelled) {
                    in_pull = true;
                    eventually([&] { return cancelled.load(); }, 20s);
                    saw_cancel = cancelled.load();
                }).ok());
    ASSERT_TRUE(eventually([&] { return in_pull.load(); }));
    EXPECT_LT(d_->load().kv_blocks_free, idle_d_);  // allocated for the transfer
    EXPECT_EQ(d_->load().receiving, 1);
    ASSERT_TRUE(d_->cancel("victim"));
    ASSERT_TRUE(sink->wait());
    EXPECT_EQ(sink->final_event().reason, FinishReason::kCancelled);
    EXPECT_TRUE(saw_cancel.load() || eventually([&] { return saw_cancel.load(); }));
    EXPECT_TRUE(eventually([&] { return d_->load().kv_blocks_free == idle_d_ && d_->load().receiving == 0; }));
    EXPECT_TRUE(eventually([&] { return p_->load().kv_blocks_free == idle_p_ && p_->load().handoffs == 0; }));
    EXPECT_TRUE(eventually([&] { return stats.releases.load() == 1; }));
    // Both keep serving.
    HandoffEvent again = prefill(greedy(ref.prompts[0], 4));
    ASSERT_FALSE(again.handoff_id.empty());
    auto ok_sink = std::make_shared<CollectSink>();
    ASSERT_TRUE(decode(greedy(ref.prompts[0], 4), again, ok_sink).ok());
    ASSERT_TRUE(ok_sink->wait());
    EXPECT_EQ(ok_sink->tokens(), std::vector<int32_t>(ref.greedy[0].begin(), ref.greedy[0].begin() + 4));
}

TEST_F(DisaggEngineTest, AnUnclaimedLeaseExpiresAndFreesThePrefillBlocks) {
    start();
    const Reference ref = load_reference("qwen3_moe");
    HandoffEvent ev = prefill(greedy(ref.prompts[1], 8), nullptr, 300ms);
    ASSERT_FALSE(ev.handoff_id.empty());
    EXPECT_DOUBLE_EQ(ev.lease_seconds, 0.3);
    EXPECT_EQ(p_->load().handoffs, 1);
    EXPECT_LT(p_->load().kv_blocks_free, idle_p_);
    EXPECT_TRUE(eventually([&] { return p_->load().handoffs == 0 && p_->load().kv_blocks_free == idle_p_; }, 10s));
    EXPECT_FALSE(p_->release_handoff(ev.handoff_id));  // gone: a late decode worker learns it
    // A decode worker that pulls after the expiry: the acknowledgement fails, so the request
    // fails rather than decode from blocks that may have been reused.
    auto sink = std::make_shared<CollectSink>();
    ASSERT_TRUE(decode(greedy(ref.prompts[1], 8), ev, sink).ok());
    ASSERT_TRUE(sink->wait());
    EXPECT_EQ(sink->final_event().reason, FinishReason::kError);
    EXPECT_NE(sink->final_event().error.message().find("lease"), std::string::npos)
        << sink->final_event().error.to_string();
    EXPECT_TRUE(eventually([&] { return d_->load().kv_blocks_free == idle_d_; }));
}

TEST_F(DisaggEngineTest, AFirstTokenThatEndsTheRequestIsNotHandedOff) {
    start();
    const Reference ref = load_reference("qwen3_moe");
    std::shared_ptr<PrefillSink> sink;
    HandoffEvent ev = prefill(greedy(ref.prompts[0], 1), &sink);
    EXPECT_TRUE(ev.handoff_id.empty());
    ASSERT_TRUE(sink->wait());
    EXPECT_EQ(sink->final_event().reason, FinishReason::kLength);
    EXPECT_EQ(sink->tokens(), std::vector<int32_t>{ref.greedy[0][0]});
    // A stop token at the first token.
    GenerateParams stop = greedy(ref.prompts[0], 8);
    stop.stopping.stop_token_ids = {ref.greedy[0][0]};
    ev = prefill(stop, &sink);
    EXPECT_TRUE(ev.handoff_id.empty());
    ASSERT_TRUE(sink->wait());
    EXPECT_EQ(sink->final_event().reason, FinishReason::kStop);
    EXPECT_EQ(p_->load().handoffs, 0);
    EXPECT_TRUE(eventually([&] { return p_->load().kv_blocks_free == idle_p_; }));
}

TEST_F(DisaggEngineTest, ALyingSourceIsRefusedAndBothEnginesKeepServing) {
    start();
    const Reference ref = load_reference("qwen3_moe");
    struct Lie {
        const char* field;
        std::function<void(disagg::KvSourceDesc&)> edit;
    };
    const std::vector<Lie> lies = {
        {"kv.block_ids", [](disagg::KvSourceDesc& d) { d.block_ids[0] = static_cast<int32_t>(d.num_blocks); }},
        {"kv.block_ids", [](disagg::KvSourceDesc& d) { d.block_ids[1] = -5; }},
        {"kv.region_bytes", [](disagg::KvSourceDesc& d) { d.region_bytes *= 2; }},
        {"kv.regions_per_block", [](disagg::KvSourceDesc& d) { d.regions_per_block += 1; }},
        {"kv.region_base", [](disagg::KvSourceDesc& d) { d.region_base.pop_back(); }},
        {"kv.num_blocks", [](disagg::KvSourceDesc& d) { d.num_blocks += 1000; }},
        {"kv.transport", [](disagg::KvSourceDesc& d) { d.transport = "rdma"; }},
    };
    for (const Lie& lie : lies) {
        HandoffEvent ev = prefill(greedy(ref.prompts[2], 8));
        ASSERT_FALSE(ev.handoff_id.empty());
        auto sink = std::make_shared<CollectSink>();
        ASSERT_TRUE(decode(greedy(ref.prompts[2], 8), ev, sink, nullptr, lie.edit).ok());
        ASSERT_TRUE(sink->wait());
        const FinalEvent f = sink->final_event();
        EXPECT_EQ(f.reason, FinishReason::kError) << lie.field;
        EXPECT_NE(f.error.message().find(lie.field), std::string::npos) << f.error.to_string();
        EXPECT_TRUE(eventually([&] { return d_->load().kv_blocks_free == idle_d_; })) << lie.field;
        EXPECT_TRUE(eventually([&] { return p_->load().handoffs == 0; })) << lie.field;  // still released
    }
    // Counts from the handoff itself are checked at submission.
    HandoffEvent ev = prefill(greedy(ref.prompts[0], 4));
    ASSERT_FALSE(ev.handoff_id.empty());
    HandoffEvent wrong = ev;
    wrong.block_ids.push_back(0);
    auto s = decode(greedy(ref.prompts[0], 4), wrong, std::make_shared<CollectSink>());
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.status().message().find("KV blocks"), std::string::npos) << s.status().to_string();
    wrong = ev;
    wrong.random_draws = uint64_t{1} << 40;
    s = decode(greedy(ref.prompts[0], 4), wrong, std::make_shared<CollectSink>());
    EXPECT_NE(s.status().message().find("random_draws"), std::string::npos) << s.status().to_string();
    wrong = ev;
    wrong.first_token.token = 100000;
    s = decode(greedy(ref.prompts[0], 4), wrong, std::make_shared<CollectSink>());
    EXPECT_NE(s.status().message().find("first_token"), std::string::npos) << s.status().to_string();
    // The honest one still works.
    auto sink = std::make_shared<CollectSink>();
    ASSERT_TRUE(decode(greedy(ref.prompts[0], 4), ev, sink).ok());
    ASSERT_TRUE(sink->wait());
    EXPECT_EQ(sink->tokens(), std::vector<int32_t>(ref.greedy[0].begin(), ref.greedy[0].begin() + 4));
}

// The decode side owns the text: the first token's text is produced there, and the streamed text
// equals aggregated serving's (the demo model has a tokenizer).
TEST_F(DisaggEngineTest, TheDecodeSideReplaysTheFirstTokenIntoTheText) {
    start({.kv_cache_bytes = 4 << 20, .kv_block_size = 4}, /*demo=*/true);
    auto aggregated = make(*backend_a_, {.kv_cache_bytes = 4 << 20, .kv_block_size = 4}, true);
    GenerateParams params = greedy({1, 2, 3, 4, 5, 6, 7}, 10);
    auto agg = std::make_shared<CollectSink>();
    ASSERT_TRUE(aggregated->submit(params, agg).ok());
    ASSERT_TRUE(agg->wait());
    std::shared_ptr<PrefillSink> psink;
    HandoffEvent ev = prefill(params, &psink);
    ASSERT_FALSE(ev.handoff_id.empty());
    EXPECT_EQ(psink->num_deltas(), 0);  // P emitted nothing: no text on the prefill side
    auto sink = std::make_shared<CollectSink>();
    ASSERT_TRUE(decode(params, ev, sink).ok());
    ASSERT_TRUE(sink->wait());
    EXPECT_EQ(sink->tokens(), agg->tokens());
    EXPECT_EQ(sink->text(), agg->text());
    EXPECT_FALSE(sink->text().empty());
}

// A prefilled sequence preempted on the decode worker is recomputed there, with the same tokens.
TEST_F(DisaggEngineTest, APreemptedPrefilledSequenceIsRecomputedOnTheDecodeSide) {
    const Reference ref = load_reference("qwen3_moe");
    // D's cache: 16 blocks of 4 tokens. 17 + 24 and 30 + 24 tokens take 11 and 14 blocks: both
    // prompts fit at once (5 + 8), both outputs do not, so one is preempted and recomputed.
    const int64_t per_block = 3 * 4 * 2 * 2 * 32 * 4;  // layers x block x (K,V) x kv heads x head_dim x f32
    p_ = make(*backend_p_, {.kv_cache_bytes = 4 << 20, .kv_block_size = 4});
    d_ = make(*backend_d_, {.kv_cache_bytes = 16 * per_block, .kv_block_size = 4});
    auto aggregated = make(*backend_a_, {.kv_cache_bytes = 4 << 20, .kv_block_size = 4});
    ASSERT_EQ(d_->load().kv_blocks_total, 16);
    auto tp = disagg::make_inproc_transport(p_->kv_cache(), "P-preempt");
    auto td = disagg::make_inproc_transport(d_->kv_cache(), "D-preempt");
    ASSERT_TRUE(tp.ok() && td.ok());
    tp_ = std::move(tp).value();
    td_ = std::move(td).value();
    std::vector<HandoffEvent> events;
    for (int i = 1; i <= 2; ++i) {
        events.push_back(prefill(greedy(ref.prompts[static_cast<size_t>(i)], 24)));
        ASSERT_FALSE(events.back().handoff_id.empty());
    }
    // The first pull waits until the second request is submitted, so both decode together.
    std::atomic<bool> second_submitted{false};
    std::vector<std::shared_ptr<CollectSink>> sinks;
    for (int i = 0; i < 2; ++i) {
        sinks.push_back(std::make_shared<CollectSink>());
        std::function<void(const std::atomic<bool>&)> hold = nullptr;
        if (i == 0) hold = [&](const std::atomic<bool>&) { eventually([&] { return second_submitted.load(); }); };
        ASSERT_TRUE(decode(greedy(ref.prompts[static_cast<size_t>(i) + 1], 24), events[static_cast<size_t>(i)],
                           sinks.back(), nullptr, nullptr, hold)
                        .ok());
    }
    second_submitted = true;
    for (int i = 0; i < 2; ++i) {
        auto agg = std::make_shared<CollectSink>();
        ASSERT_TRUE(aggregated->submit(greedy(ref.prompts[static_cast<size_t>(i) + 1], 24), agg).ok());
        ASSERT_TRUE(agg->wait());
        ASSERT_TRUE(sinks[static_cast<size_t>(i)]->wait());
        EXPECT_EQ(sinks[static_cast<size_t>(i)]->tokens(), agg->tokens()) << i;
        EXPECT_EQ(sinks[static_cast<size_t>(i)]->tokens().size(), 24u);
    }
    EXPECT_GT(d_->load().num_preemptions, 0);
    EXPECT_TRUE(eventually([&] { return d_->load().kv_blocks_free == 16; }));
}

}  // namespace
}  // namespace moe
