// Expert parallelism in the model: an in-process group of N ranks (ThreadComm) gives bitwise the
// logits and greedy tokens of the plain single-process model, with requests spread unevenly (a
// rank with none included), E not divisible by N, redundant expert copies, f32 fixtures from
// transformers and a bf16 model on the batch-invariant CPU route.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <mutex>
#include <set>
#include <thread>

#include "ep/ep_test_util.h"
#include "model/random_model.h"
#include "reference/fixture.h"

namespace moe::testing {
namespace {

void expect_same(const GroupRun& plain, const GroupRun& ep, const std::string& what) {
    ASSERT_TRUE(plain.status.ok()) << what << ": " << plain.status.to_string();
    ASSERT_TRUE(ep.status.ok()) << what << ": " << ep.status.to_string();
    ASSERT_EQ(plain.prompts.size(), ep.prompts.size());
    for (size_t i = 0; i < plain.prompts.size(); ++i) {
        const PromptRun& a = plain.prompts[i];
        const PromptRun& b = ep.prompts[i];
        EXPECT_EQ(a.tokens, b.tokens) << what << ": prompt " << i;
        ASSERT_EQ(a.logits.size(), b.logits.size()) << what << ": prompt " << i;
        ASSERT_FALSE(a.logits.empty());
        size_t diff = 0;
        for (size_t k = 0; k < a.logits.size(); ++k)
            if (std::memcmp(&a.logits[k], &b.logits[k], sizeof(float)) != 0) ++diff;
        EXPECT_EQ(diff, 0u) << what << ": prompt " << i << ": " << diff << " of " << a.logits.size()
                            << " logits differ bitwise";
    }
}

// Prompt i on rank 0 when i is even, on the last rank when odd: uneven, and with three ranks
// the middle one has no request at all (it still serves its experts to the others).
std::vector<int> uneven(size_t n, int world) {
    std::vector<int> owner(n);
    for (size_t i = 0; i < n; ++i) owner[i] = (i % 2 == 0) ? 0 : world - 1;
    return owner;
}

ModelFactory fixture_factory(const std::filesystem::path& dir) {
    return [dir](Backend& be, const ModelLoadOptions& o) { return MoeTransformer::load(dir, be, o); };
}

class EpFixtures : public ::testing::TestWithParam<std::string> {};

TEST_P(EpFixtures, GroupOf1To3MatchesThePlainModelBitwise) {
    const Fixture f = load_fixture(GetParam());
    std::vector<std::vector<int32_t>> prompts = f.prompts;
    for (const auto& g : f.greedy) prompts.push_back(g);  // more, longer sequences
    const ModelFactory factory = fixture_factory(f.dir);
    const GroupRun plain = run_group(factory, prompts, {}, 0, {}, 4);
    for (int world = 1; world <= 3; ++world) {
        const GroupRun ep = run_group(factory, prompts, uneven(prompts.size(), world), world, {}, 4);
        expect_same(plain, ep, GetParam() + " world " + std::to_string(world));
    }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, EpFixtures, ::testing::ValuesIn(fixture_names()),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

// A bf16 Qwen3-MoE made in memory; each rank makes its own copy (same seed, same weights).
struct RandomBf16 {
    RandomModelShape shape;
    ModelConfig config;
    RandomBf16(int64_t experts) {
        shape.num_experts = experts;
        shape.num_layers = 2;
        shape.hidden_size = 128;
        shape.vocab_size = 300;
        config = parse_model_config(random_model_config_json(shape), "test model").value();
    }
    ModelFactory factory() const {
        return [c = config](Backend& be, const ModelLoadOptions& o) {
            ModelLoadOptions opts = o;
            opts.weight_dtype = WeightDType::kBF16;
            return MoeTransformer::create(c, make_random_weights(c, 7, DType::kBF16), be, opts);
        };
    }
};

std::vector<std::vector<int32_t>> some_prompts(int n, int64_t vocab) {
    std::vector<std::vector<int32_t>> p;
    for (int i = 0; i < n; ++i) {
        std::vector<int32_t> ids;
        for (int j = 0; j < 3 + 5 * i; ++j) ids.push_back(static_cast<int32_t>((17 * i + 29 * j + 3) % vocab));
        p.push_back(ids);
    }
    return p;
}

TEST(EpBf16, GroupOf1To3MatchesThePlainModelBitwiseOnTheBatchInvariantRoute) {
    const RandomBf16 m(7);  // 7 experts: 3 + 2 + 2 over three ranks
    const auto prompts = some_prompts(5, m.shape.vocab_size);
    const GroupRun plain = run_group(m.factory(), prompts, {}, 0, {}, 5);
    for (int world = 1; world <= 3; ++world) {
        const GroupRun ep = run_group(m.factory(), prompts, uneven(prompts.size(), world), world, {}, 5);
        expect_same(plain, ep, "bf16 world " + std::to_string(world));
        if (world == 3) {
            EXPECT_EQ(ep.local_experts_layer0[0], (std::vector<int32_t>{0, 1, 2}));
            EXPECT_EQ(ep.local_experts_layer0[1], (std::vector<int32_t>{3, 4}));
            EXPECT_EQ(ep.local_experts_layer0[2], (std::vector<int32_t>{5, 6}));
            for (int r = 0; r < 3; ++r) EXPECT_LT(ep.owned_bytes[static_cast<size_t>(r)], plain.owned_bytes[0]);
            // The middle rank has no request, yet computed rows for the others.
            EXPECT_EQ(ep.stats[1].tokens, 0);
            EXPECT_GT(ep.stats[1].rows_received, 0);
            EXPECT_GT(ep.stats[0].dispatch_bytes, 0);
        }
    }
}

TEST(EpBf16, RowsTravelAsBf16WhereTheExpertKernelsRoundToBf16) {
    const RandomBf16 m(8);
    std::unique_ptr<Backend> probe = make_cpu_backend({.num_threads = 1, .matmul = CpuMatmul::kOwn});
    const bool bf16_wire = probe->moe_experts_round_input_to_bf16(DType::kBF16);
    // One prompt of 6 tokens on rank 0 of 2, prefill only: its rows for rank 1 carry hidden_size
    // values of 2 bytes (bf16) or 4 (f32) each, and come back as f32.
    const GroupRun ep = run_group(m.factory(), {{1, 2, 3, 4, 5, 6}}, {0}, 2, {}, 0);
    ASSERT_TRUE(ep.status.ok()) << ep.status.to_string();
    const ExpertParallelStats& s = ep.stats[0];
    const int64_t rows_to_peer = ep.stats[1].rows_received;  // rank 1 has no tokens of its own
    ASSERT_GT(rows_to_peer, 0);
    EXPECT_EQ(s.dispatch_bytes, rows_to_peer * m.shape.hidden_size * (bf16_wire ? 2 : 4));
    EXPECT_EQ(ep.stats[1].combine_bytes, rows_to_peer * m.shape.hidden_size * 4);
    EXPECT_EQ(ep.stats[1].dispatch_bytes, 0);
    EXPECT_EQ(s.moe_layer_calls, 2);
    EXPECT_EQ(s.tokens, 12);
    EXPECT_EQ(ep.stats[1].moe_layer_calls, 2);
}

TEST(EpBf16, RedundantExpertPlacementChangesNothing) {
    const RandomBf16 m(8);
    const auto prompts = some_prompts(4, m.shape.vocab_size);
    const GroupRun plain = run_group(m.factory(), prompts, {}, 0, {}, 3);
    // Experts 0 and 4 held twice; ranks list them in any order.
    auto two = ExpertPlacement::from_rank_lists(8, {{0, 1, 2, 3, 4}, {7, 6, 5, 4, 0}});
    ASSERT_TRUE(two.ok()) << two.status().to_string();
    expect_same(plain, run_group(m.factory(), prompts, uneven(prompts.size(), 2), 2, {*two}, 3), "redundant, 2 ranks");
    auto three = ExpertPlacement::from_rank_lists(8, {{0, 1, 2, 7}, {3, 4, 0}, {5, 6, 7, 1}});
    ASSERT_TRUE(three.ok()) << three.status().to_string();
    expect_same(plain, run_group(m.factory(), prompts, uneven(prompts.size(), 3), 3, {*three}, 3),
                "redundant, 3 ranks");
}

TEST(EpPlacement, BadPlacementsAreRefusedWithTheReason) {
    auto small = ExpertPlacement::contiguous(2, 3);  // fewer experts than ranks: the last holds none
    ASSERT_TRUE(small.ok());
    EXPECT_EQ(small->rank_begin, (std::vector<int64_t>{0, 1, 2, 2}));
    EXPECT_FALSE(ExpertPlacement::contiguous(0, 3).ok());
    EXPECT_FALSE(ExpertPlacement::contiguous(4, 0).ok());
    auto missing = ExpertPlacement::from_rank_lists(4, {{0, 1}, {1, 2}});
    ASSERT_FALSE(missing.ok());
    EXPECT_NE(missing.status().message().find("expert 3 is held by no rank"), std::string::npos);
    auto twice = ExpertPlacement::from_rank_lists(4, {{0, 1, 1}, {2, 3}});
    ASSERT_FALSE(twice.ok());
    EXPECT_NE(twice.status().message().find("twice"), std::string::npos);
    EXPECT_TRUE(ExpertPlacement::from_rank_lists(4, {{0, 1, 2, 3}, {}}).ok());
    EXPECT_FALSE(ExpertPlacement::from_rank_lists(4, {{0, 1, 2, 9}}).ok());
    auto c = ExpertPlacement::contiguous(8, 3);
    ASSERT_TRUE(c.ok());
    EXPECT_EQ(c->rank_begin, (std::vector<int64_t>{0, 3, 6, 8}));
    EXPECT_TRUE(c->identity());
}

// A source that records which tensors were asked for.
class RecordingSource final : public WeightSource {
public:
    explicit RecordingSource(std::shared_ptr<const WeightSource> inner) : inner_(std::move(inner)) {}
    StatusOr<WeightRef> get(const std::string& name) const override {
        std::lock_guard<std::mutex> lock(mu_);
        names_.insert(name);
        return inner_->get(name);
    }
    bool has(const std::string& name) const override { return inner_->has(name); }
    std::string describe() const override { return inner_->describe(); }
    std::set<std::string> names() const {
        std::lock_guard<std::mutex> lock(mu_);
        return names_;
    }

private:
    std::shared_ptr<const WeightSource> inner_;
    mutable std::mutex mu_;
    mutable std::set<std::string> names_;
};

TEST(EpLoad, ARankNeverReadsAnotherRanksExperts) {
    const RandomBf16 m(7);
    auto comms = make_thread_comms(3);
    auto src = std::make_shared<RecordingSource>(make_random_weights(m.config, 7, DType::kBF16));
    std::unique_ptr<Backend> be = make_cpu_backend({.num_threads = 1});
    ModelLoadOptions o;
    o.expert_parallel.comm = comms[1].get();  // rank 1 of 3: experts 3 and 4
    auto model = MoeTransformer::create(m.config, src, *be, o);
    ASSERT_TRUE(model.ok()) << model.status().to_string();
    int experts_read = 0;
    for (const std::string& n : src->names()) {
        const auto pos = n.find(".experts.");
        if (pos == std::string::npos) continue;
        const int e = std::stoi(n.substr(pos + 9));
        EXPECT_TRUE(e == 3 || e == 4) << n << " read by rank 1";
        ++experts_read;
    }
    EXPECT_EQ(experts_read, 2 * 2 * 3);                                 // two layers, two experts, three matrices
    EXPECT_TRUE(src->names().count("model.layers.0.mlp.gate.weight"));  // every rank routes
}

TEST(EpFailure, ALostPeerEndsTheStepWithUnavailableWithinTheTimeout) {
    const RandomBf16 m(8);
    auto comms = make_thread_comms(2, std::chrono::milliseconds(300));
    std::unique_ptr<Backend> be = make_cpu_backend({.num_threads = 1});
    ModelLoadOptions o;
    o.expert_parallel.comm = comms[0].get();
    auto model = m.factory()(*be, o);
    ASSERT_TRUE(model.ok()) << model.status().to_string();
    auto cache = KvCache::create(*be, (*model)->config(), {.num_blocks = 4, .block_size = 16, .dtype = DType::kF32});
    ASSERT_TRUE(cache.ok());
    const std::vector<int32_t> ids = {1, 2, 3};
    const std::vector<int32_t> table = {0};
    BatchView batch;
    batch.sequences.push_back({.token_ids = ids, .num_cached = 0, .block_table = table, .all_logits = false});
    // Rank 1 never joins.
    const auto t0 = std::chrono::steady_clock::now();
    auto out = (*model)->forward(batch, *cache);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ASSERT_FALSE(out.ok());
    EXPECT_EQ(out.status().code(), StatusCode::kUnavailable);
    EXPECT_NE(out.status().message().find("timed out"), std::string::npos) << out.status().to_string();
    EXPECT_LT(s, 5.0);
    EXPECT_FALSE((*model)->expert_parallel_status().ok());
    // Sticky: the next step fails at once.
    auto again = (*model)->forward(batch, *cache);
    EXPECT_EQ(again.status().code(), StatusCode::kUnavailable);
}

TEST(EpFailure, ARefusedBatchStillJoinsTheGroupAndFailsAlone) {
    const RandomBf16 m(8);
    const int64_t vocab = m.shape.vocab_size;
    // Rank 0's batch holds a token id outside the vocabulary: it must still take part (with no
    // rows) so that rank 1's step completes, then report the bad id.
    auto comms = make_thread_comms(2, std::chrono::milliseconds(5000));
    Status st0, st1;
    auto rank = [&](int r, Status& st) {
        std::unique_ptr<Backend> be = make_cpu_backend({.num_threads = 1, .matmul = CpuMatmul::kOwn});
        ModelLoadOptions o;
        o.expert_parallel.comm = comms[static_cast<size_t>(r)].get();
        auto model = m.factory()(*be, o);
        if (!model.ok()) {
            st = model.status();
            return;
        }
        auto cache = KvCache::create(*be, m.config, {.num_blocks = 4, .block_size = 16, .dtype = DType::kF32});
        const std::vector<int32_t> ids = {1, r == 0 ? static_cast<int32_t>(vocab + 5) : 2, 3};
        const std::vector<int32_t> table = {0};
        BatchView batch;
        batch.sequences.push_back({.token_ids = ids, .num_cached = 0, .block_table = table, .all_logits = false});
        st = (*model)->forward(batch, *cache).status();
        // The group still works: a second step on both ranks.
        const Status second = (*model)->forward(batch, *cache).status();
        if (st.ok()) st = second;
    };
    std::thread t1([&] { rank(1, st1); });
    rank(0, st0);
    t1.join();
    EXPECT_EQ(st0.code(), StatusCode::kInvalidArgument) << st0.to_string();
    EXPECT_NE(st0.message().find("outside the vocabulary"), std::string::npos);
    EXPECT_TRUE(st1.ok()) << st1.to_string();
}

TEST(EpFailure, APeerAnnouncingTooManyRowsIsRefusedBeforeAnyAllocation) {
    const RandomBf16 m(8);  // two ranks: slots 0-3 on rank 0, 4-7 on rank 1
    auto comms = make_thread_comms(2, std::chrono::milliseconds(5000));
    Status peer_end;
    // Rank 1 is a hostile peer driving the collectives by hand: one token this step, yet it
    // announces 2^30 rows for rank 0's first expert.
    std::thread peer([&] {
        comm::Communicator& c = *comms[1];
        int64_t tokens = 1;
        if (Status s = c.all_reduce_max(std::span<int64_t>(&tokens, 1)); !s.ok()) {
            peer_end = s;
            return;
        }
        std::vector<int32_t> send(8, 0), recv(8, 0);
        send[0] = 1 << 30;
        const std::vector<int64_t> counts = {16, 16}, displs = {0, 16};
        if (Status s = c.all_to_all_v(std::as_bytes(std::span(send)), counts, displs,
                                      std::as_writable_bytes(std::span(recv)), counts, displs);
            !s.ok()) {
            peer_end = s;
            return;
        }
        peer_end = c.barrier();  // rank 0 aborts the group instead of joining
    });
    std::unique_ptr<Backend> be = make_cpu_backend({.num_threads = 1});
    ModelLoadOptions o;
    o.expert_parallel.comm = comms[0].get();
    auto model = m.factory()(*be, o);
    ASSERT_TRUE(model.ok()) << model.status().to_string();
    auto cache = KvCache::create(*be, m.config, {.num_blocks = 4, .block_size = 16, .dtype = DType::kF32});
    const std::vector<int32_t> ids = {1, 2, 3};
    const std::vector<int32_t> table = {0};
    BatchView batch;
    batch.sequences.push_back({.token_ids = ids, .num_cached = 0, .block_table = table, .all_logits = false});
    auto out = (*model)->forward(batch, *cache);
    peer.join();
    ASSERT_FALSE(out.ok());
    EXPECT_EQ(out.status().code(), StatusCode::kUnavailable);
    EXPECT_NE(out.status().message().find("aborted the group"), std::string::npos) << out.status().to_string();
    EXPECT_NE(out.status().message().find("announced 1073741824 rows"), std::string::npos) << out.status().to_string();
    // The peer learns the group is gone (the abort's reason), it does not hang.
    EXPECT_EQ(peer_end.code(), StatusCode::kUnavailable) << peer_end.to_string();
    EXPECT_NE(peer_end.message().find("aborted"), std::string::npos) << peer_end.to_string();
}

TEST(EpModel, ThePlainModelTakesAnEmptyBatch) {
    const RandomBf16 m(8);
    std::unique_ptr<Backend> be = make_cpu_backend({.num_threads = 1});
    auto model = m.factory()(*be, {});
    ASSERT_TRUE(model.ok());
    auto cache = KvCache::create(*be, m.config, {.num_blocks = 4, .block_size = 16, .dtype = DType::kF32});
    auto out = (*model)->forward(BatchView{}, *cache);
    ASSERT_TRUE(out.ok()) << out.status().to_string();
    EXPECT_TRUE(out->logits.empty());
    EXPECT_EQ(out->row_start, (std::vector<int64_t>{0}));
    EXPECT_EQ((*model)->expert_group(), nullptr);
}

}  // namespace
}  // namespace moe::testing
