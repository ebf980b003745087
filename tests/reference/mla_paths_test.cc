// MLA's two attention paths against each other and against transformers, on the DeepSeek-V3
// fixtures: the expanded path (per-head K/V from the latent) and the absorbed path (W_UK folded
// into the query, attention over the latent) pinned for every step, prefill and decode alike.
// The default (expanded for prefill, absorbed for decode) is what TransformersMatch runs.
#include <gtest/gtest.h>

#include "moe/cpu_backend.h"
#include "reference/fixture.h"

namespace moe::testing {
namespace {

constexpr double kF32Tolerance = 1e-4;
constexpr double kPathsAgree = 2e-5;

// Logits of prompt p alone: the prompt (all rows), then its 15 reference greedy tokens fed one
// a step, so every row is comparable with transformers' even if a token differed.
std::vector<std::vector<float>> run_prompt(MoeTransformer& m, const Fixture& f, size_t p, int64_t block_size) {
    const std::vector<int32_t>& prompt = f.prompts[p];
    const int64_t steps = static_cast<int64_t>(f.greedy[p].size());
    auto cache = KvCache::create(m.backend(), m.config(),
                                 {.num_blocks = (static_cast<int64_t>(prompt.size()) + steps) / block_size + 2,
                                  .block_size = block_size,
                                  .dtype = DType::kF32});
    EXPECT_TRUE(cache.ok()) << cache.status().to_string();
    ShuffledBlocks blocks(cache->num_blocks(), 7);
    std::vector<int32_t> table;
    std::vector<std::vector<float>> rows;
    blocks.cover(table, static_cast<int64_t>(prompt.size()), block_size);
    BatchView batch;
    batch.sequences.push_back({.token_ids = prompt, .num_cached = 0, .block_table = table, .all_logits = true});
    auto out = m.forward(batch, *cache);
    EXPECT_TRUE(out.ok()) << out.status().to_string();
    if (!out.ok()) return rows;
    const int64_t V = out->vocab_size;
    for (int64_t r = 0; r < out->row_start[1]; ++r) rows.emplace_back(out->row(r), out->row(r) + V);
    int64_t cached = static_cast<int64_t>(prompt.size());
    for (int64_t s = 0; s + 1 < steps; ++s) {
        blocks.cover(table, cached + 1, block_size);
        BatchView b;
        b.sequences.push_back({.token_ids = std::span<const int32_t>(&f.greedy[p][static_cast<size_t>(s)], 1),
                               .num_cached = cached,
                               .block_table = table});
        auto o = m.forward(b, *cache);
        EXPECT_TRUE(o.ok()) << o.status().to_string();
        if (!o.ok()) return rows;
        rows.emplace_back(o->row(0), o->row(0) + V);
        ++cached;
    }
    return rows;
}

class MlaPaths : public ::testing::TestWithParam<std::string> {
protected:
    void SetUp() override {
        backend_ = make_cpu_backend({.num_threads = 2});
        fixture_ = load_fixture(GetParam());
    }
    std::unique_ptr<MoeTransformer> load(MlaPath path) {
        auto m = MoeTransformer::load(fixture_.dir, *backend_, {.weight_dtype = WeightDType::kF32, .mla_path = path});
        EXPECT_TRUE(m.ok()) << m.status().to_string();
        return m.ok() ? std::move(m).value() : nullptr;
    }
    Fixture fixture_;
    std::unique_ptr<Backend> backend_;
};

TEST_P(MlaPaths, ExpandedAndAbsorbedEqualTransformersAndEachOther) {
    auto expanded = load(MlaPath::kExpanded);
    auto absorbed = load(MlaPath::kAbsorbed);
    ASSERT_TRUE(expanded && absorbed);
    double worst_ref = 0, worst_paths = 0;
    for (size_t p = 0; p < fixture_.prompts.size(); ++p) {
        const auto e = run_prompt(*expanded, fixture_, p, 4);
        const auto a = run_prompt(*absorbed, fixture_, p, 4);
        const int64_t len = static_cast<int64_t>(fixture_.prompts[p].size());
        ASSERT_EQ(static_cast<int64_t>(e.size()), len + 15);
        ASSERT_EQ(e.size(), a.size());
        int64_t rows, vocab;
        const float* pre = fixture_.logits("prefill", p, &rows, &vocab);
        const float* dec = fixture_.logits("greedy", p, &rows, &vocab);
        for (size_t r = 0; r < e.size(); ++r) {
            // Rows [0, len): the prompt's; row len - 1 + s (s >= 1): greedy step s.
            const float* ref = static_cast<int64_t>(r) < len ? pre + static_cast<int64_t>(r) * vocab
                                                             : dec + (static_cast<int64_t>(r) - len + 1) * vocab;
            const double ee = max_rel_error(e[r].data(), ref, vocab), ea = max_rel_error(a[r].data(), ref, vocab);
            const double ep = max_rel_error(a[r].data(), e[r].data(), vocab);
            EXPECT_LE(ee, kF32Tolerance) << "expanded, prompt " << p << " row " << r;
            EXPECT_LE(ea, kF32Tolerance) << "absorbed, prompt " << p << " row " << r;
            EXPECT_LE(ep, kPathsAgree) << "absorbed vs expanded, prompt " << p << " row " << r;
            worst_ref = std::max({worst_ref, ee, ea});
            worst_paths = std::max(worst_paths, ep);
        }
        // Greedy tokens from either path are transformers'.
        for (size_t s = 0; s < fixture_.greedy[p].size(); ++s) {
            const size_t r = static_cast<size_t>(len) - 1 + s;
            EXPECT_EQ(argmax(e[r].data(), vocab), fixture_.greedy[p][s]) << "expanded, prompt " << p << " step " << s;
            EXPECT_EQ(argmax(a[r].data(), vocab), fixture_.greedy[p][s]) << "absorbed, prompt " << p << " step " << s;
        }
    }
    std::printf("[ figures  ] %s: max rel error vs transformers %.3g, absorbed vs expanded %.3g\n", GetParam().c_str(),
                worst_ref, worst_paths);
}

TEST_P(MlaPaths, TheCacheHoldsOneLatentRowPerTokenAndRefusesAnotherLayout) {
    auto m = load(MlaPath::kAuto);
    ASSERT_TRUE(m);
    const ModelConfig& c = m->config();
    auto cache = KvCache::create(*backend_, c, {.num_blocks = 4, .block_size = 4, .dtype = DType::kF32});
    ASSERT_TRUE(cache.ok()) << cache.status().to_string();
    EXPECT_EQ(cache->layout().num_pools, 1);
    EXPECT_EQ(cache->latent(0).dim(2), c.mla.kv_lora_rank + c.mla.qk_rope_head_dim);
    EXPECT_EQ(KvCache::bytes_per_block(c, 4, DType::kF32),
              c.num_layers * 4 * (c.mla.kv_lora_rank + c.mla.qk_rope_head_dim) * 4);
    // A K/V cache sized for a GQA model of the same depth is refused, naming both layouts.
    ModelConfig gqa = c;
    gqa.mla = {};
    auto wrong = KvCache::create(*backend_, gqa, {.num_blocks = 4, .block_size = 4, .dtype = DType::kF32});
    ASSERT_TRUE(wrong.ok());
    const std::vector<int32_t> ids = {1, 2, 3}, table = {0};
    BatchView b;
    b.sequences.push_back({.token_ids = ids, .num_cached = 0, .block_table = table});
    auto out = m->forward(b, *wrong);
    ASSERT_FALSE(out.ok());
    EXPECT_NE(out.status().message().find("the model needs latent"), std::string::npos) << out.status().to_string();
}

INSTANTIATE_TEST_SUITE_P(Fixtures, MlaPaths, ::testing::Values("deepseek_v3", "deepseek_v3_noq"));

}  // namespace
}  // namespace moe::testing
