// FP8 block-scaled DeepSeek-V3 checkpoints (#20) served as stored, against transformers on the
// dequantized weights (tests/reference/make_fp8_fixture.py; fixtures in fixtures_fp8/), on every
// backend of the op-test driver's list: logits within kFp8Tolerance, greedy tokens identical,
// a ragged batch equal to each prompt alone, 1 byte per FP8 weight resident, and the load's
// errors for a config that does not fit the files.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <tuple>

#include "model/safetensors.h"
#include "moe/cpu_backend.h"
#include "ops/backend_factories.h"
#include "reference/fixture.h"

namespace moe::testing {
namespace {

namespace fs = std::filesystem;

// Per row, max |logit - ref| / max |ref|. The reference multiplies the dequantized weights by f32
// activations; our FP8 products take x rounded to bf16 (relative 2^-9 per element, as for bf16
// weights), through 3 layers of MLA and MoE. So, as for bf16 weights (transformers_match_test's
// Bf16WeightsWithinTolerance): the median row within kFp8Median, 95% of rows within
// kFp8RowTolerance, greedy tokens identical. A rounding that flips a near-tied expert choice
// moves that row far more than rounding does, hence the percentile, not the maximum. Measured
// (CPU, AVX512-BF16, both routes): [128, 128] median 4.2e-3, 99% of 101 rows within 2e-2, one row
// at 0.225 (taken to be a near-tied expert choice flipped by the rounding, as in the bf16 test;
// not traced); [32, 64] median 4.3e-3, worst 7.3e-3. bf16 weights on the
// deepseek_v3 fixture (x and w rounded): median 3.6e-3; f32 weights: 1e-5. The difference is x's
// bf16 rounding, not the FP8 weights, which both sides hold exactly.
constexpr double kFp8Median = 1e-2;
constexpr double kFp8RowTolerance = 2e-2;
constexpr double kBatchInvariance = 1e-6;

fs::path fp8_fixtures_dir() {
    return fs::path(MOE_SOURCE_DIR) / "tests/reference/fixtures_fp8";
}

std::vector<std::string> fp8_fixture_names() {
    std::vector<std::string> names;
    if (!fs::exists(fp8_fixtures_dir())) return names;
    for (const auto& e : fs::directory_iterator(fp8_fixtures_dir()))
        if (fs::exists(e.path() / "reference.json")) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
}

Fixture load_fp8_fixture(const std::string& name) {
    Fixture f;
    f.dir = fp8_fixtures_dir() / name;
    std::ifstream in(f.dir / "reference.json");
    nlohmann::json j = nlohmann::json::parse(in);
    f.family = j.at("family").get<std::string>();
    f.prompts = j.at("prompts").get<std::vector<std::vector<int32_t>>>();
    f.greedy = j.at("greedy").get<std::vector<std::vector<int32_t>>>();
    auto t = SafetensorsFile::open(f.dir / "reference.safetensors");
    if (!t.ok()) throw std::runtime_error(t.status().to_string());
    f.tensors = std::move(t).value();
    return f;
}

// Logits of `prompts` prefilled together (one ragged batch), then each fed its reference greedy
// tokens one a step (so every row stays comparable with transformers' even if a choice
// differed): per prompt, its prompt rows then its decode rows.
std::vector<std::vector<std::vector<float>>> run_forced(MoeTransformer& m, const Fixture& f,
                                                        const std::vector<size_t>& which) {
    const int64_t block_size = 4;
    int64_t tokens = 0;
    for (size_t p : which) tokens += static_cast<int64_t>(f.prompts[p].size() + f.greedy[p].size());
    auto cache = KvCache::create(m.backend(), m.config(),
                                 {.num_blocks = tokens / block_size + static_cast<int64_t>(which.size()) + 2,
                                  .block_size = block_size,
                                  .dtype = DType::kF32});
    EXPECT_TRUE(cache.ok()) << cache.status().to_string();
    std::vector<std::vector<std::vector<float>>> rows(which.size());
    if (!cache.ok()) return rows;
    ShuffledBlocks blocks(cache->num_blocks(), 5);
    std::vector<std::vector<int32_t>> tables(which.size());
    std::vector<int64_t> cached(which.size());
    BatchView batch;
    for (size_t i = 0; i < which.size(); ++i) {
        const auto& prompt = f.prompts[which[i]];
        blocks.cover(tables[i], static_cast<int64_t>(prompt.size()), block_size);
        batch.sequences.push_back({.token_ids = prompt, .num_cached = 0, .block_table = tables[i], .all_logits = true});
        cached[i] = static_cast<int64_t>(prompt.size());
    }
    auto out = m.forward(batch, *cache);
    EXPECT_TRUE(out.ok()) << out.status().to_string();
    if (!out.ok()) return rows;
    const int64_t V = out->vocab_size;
    for (size_t i = 0; i < which.size(); ++i)
        for (int64_t r = out->row_start[i]; r < out->row_start[i + 1]; ++r)
            rows[i].emplace_back(out->row(r), out->row(r) + V);
    const size_t steps = f.greedy[which[0]].size();
    for (size_t s = 0; s + 1 < steps; ++s) {
        BatchView b;
        for (size_t i = 0; i < which.size(); ++i) {
            blocks.cover(tables[i], cached[i] + 1, block_size);
            b.sequences.push_back({.token_ids = std::span<const int32_t>(&f.greedy[which[i]][s], 1),
                                   .num_cached = cached[i],
                                   .block_table = tables[i]});
        }
        auto o = m.forward(b, *cache);
        EXPECT_TRUE(o.ok()) << o.status().to_string();
        if (!o.ok()) return rows;
        for (size_t i = 0; i < which.size(); ++i) {
            rows[i].emplace_back(o->last_row(i), o->last_row(i) + V);
            ++cached[i];
        }
    }
    return rows;
}

using FixtureOnBackend = std::tuple<std::string, BackendFactory>;

class Fp8Match : public ::testing::TestWithParam<FixtureOnBackend> {
protected:
    void SetUp() override {
        const BackendFactory& factory = std::get<1>(GetParam());
        auto be = factory.make();
        if (!be.ok() && be.status().code() == StatusCode::kUnavailable)
            GTEST_SKIP() << unavailable_message(factory, be.status());
        ASSERT_TRUE(be.ok()) << "making the " << factory.name << " backend: " << be.status().to_string();
        backend_ = std::move(be).value();
        fixture_ = load_fp8_fixture(std::get<0>(GetParam()));
    }
    std::string run_name() const { return std::get<0>(GetParam()) + " (" + std::get<1>(GetParam()).name + ")"; }
    std::unique_ptr<MoeTransformer> load() {
        auto m = MoeTransformer::load(fixture_.dir, *backend_, {.weight_dtype = WeightDType::kF32});
        EXPECT_TRUE(m.ok()) << m.status().to_string();
        return m.ok() ? std::move(m).value() : nullptr;
    }

    Fixture fixture_;
    std::unique_ptr<Backend> backend_;
};

TEST_P(Fp8Match, LogitsAndGreedyTokensMatchTransformers) {
    auto model = load();
    ASSERT_NE(model, nullptr);
    std::vector<double> errors;
    for (size_t p = 0; p < fixture_.prompts.size(); ++p) {
        const auto rows = run_forced(*model, fixture_, {p})[0];
        const int64_t len = static_cast<int64_t>(fixture_.prompts[p].size());
        ASSERT_EQ(rows.size(), static_cast<size_t>(len) + fixture_.greedy[p].size() - 1);
        int64_t n, vocab;
        const float* pre = fixture_.logits("prefill", p, &n, &vocab);
        const float* dec = fixture_.logits("greedy", p, &n, &vocab);
        for (size_t r = 0; r < rows.size(); ++r) {
            // Rows [0, len): the prompt's; row len - 1 + s (s >= 1): greedy step s.
            const float* ref = static_cast<int64_t>(r) < len ? pre + static_cast<int64_t>(r) * vocab
                                                             : dec + (static_cast<int64_t>(r) - len + 1) * vocab;
            errors.push_back(max_rel_error(rows[r].data(), ref, vocab));
        }
        for (size_t s = 0; s < fixture_.greedy[p].size(); ++s)
            EXPECT_EQ(argmax(rows[static_cast<size_t>(len) - 1 + s].data(), vocab), fixture_.greedy[p][s])
                << "prompt " << p << " greedy step " << s;
    }
    std::sort(errors.begin(), errors.end());
    const double median = errors[errors.size() / 2];
    const double within = static_cast<double>(std::count_if(errors.begin(), errors.end(),
                                                            [](double e) { return e <= kFp8RowTolerance; })) /
                          static_cast<double>(errors.size());
    std::printf(
        "[ figures  ] %s FP8 weights, %zu rows: max|logit-ref|/max|ref| median %.3g, max %.3g, %.1f%% within "
        "%.0e\n",
        run_name().c_str(), errors.size(), median, errors.back(), 100 * within, kFp8RowTolerance);
    EXPECT_LE(median, kFp8Median);
    EXPECT_GE(within, 0.95);
}

TEST_P(Fp8Match, RaggedBatchEqualsEachPromptAlone) {
    if (std::get<1>(GetParam()).name.rfind("cpu", 0) != 0)
        GTEST_SKIP() << "batch invariance is the CPU kernels' promise";
    auto model = load();
    ASSERT_NE(model, nullptr);
    std::vector<size_t> all;
    for (size_t p = 0; p < fixture_.prompts.size(); ++p) all.push_back(p);
    const auto batch = run_forced(*model, fixture_, all);
    double worst = 0;
    for (size_t p = 0; p < all.size(); ++p) {
        const auto alone = run_forced(*model, fixture_, {p})[0];
        ASSERT_EQ(alone.size(), batch[p].size());
        for (size_t r = 0; r < alone.size(); ++r)
            worst = std::max(worst,
                             max_rel_error(batch[p][r].data(), alone[r].data(), static_cast<int64_t>(alone[r].size())));
    }
    std::printf("[ figures  ] %s FP8 batch vs alone: max rel diff = %.3g\n", run_name().c_str(), worst);
    EXPECT_LE(worst, kBatchInvariance);
}

// What the model holds: every FP8 matrix at 1 byte per weight plus its f32 scales (and at most
// 64 bytes of alignment), kv_b_proj expanded to f32 (MLA weight absorption reads it plain), the
// rest as the file stores it (f32). The CPU backend's summary names the FP8 matrices.
TEST_P(Fp8Match, ResidentWeightsAreOneBytePerFp8Weight) {
    auto model = load();
    ASSERT_NE(model, nullptr);
    auto file = SafetensorsFile::open(fixture_.dir / "model.safetensors");
    ASSERT_TRUE(file.ok()) << file.status().to_string();
    int64_t expected = 0, fp8_kept = 0, fp8_weights = 0;
    for (const auto& [name, t] : (*file)->tensors()) {
        int64_t numel = 1;
        for (int64_t d : t.shape) numel *= d;
        if (name.size() > 10 && name.compare(name.size() - 10, 10, "_scale_inv") == 0) continue;
        if (t.dtype == DType::kF8E4M3) {
            const std::string scale = name + "_scale_inv";
            ASSERT_TRUE((*file)->tensors().count(scale)) << scale;
            if (name.find("kv_b_proj") != std::string::npos) {
                expected += numel * 4;  // expanded to f32 at load
                continue;
            }
            const auto& s = (*file)->tensors().at(scale);
            expected += numel + static_cast<int64_t>(s.shape[0] * s.shape[1]) * 4;
            fp8_kept += 1;
            fp8_weights += numel;
            continue;
        }
        ASSERT_EQ(t.dtype, DType::kF32) << name;
        if (name.find("rotary") != std::string::npos) continue;
        expected += numel * 4;
    }
    ASSERT_GT(fp8_kept, 0) << "fixture holds no FP8 matrix";
    const int64_t owned = model->owned_weight_bytes();
    std::printf("[ figures  ] %s: %lld FP8 matrices, %lld weights; resident weight bytes %lld (as stored: %lld)\n",
                run_name().c_str(), static_cast<long long>(fp8_kept), static_cast<long long>(fp8_weights),
                static_cast<long long>(owned), static_cast<long long>(expected));
    EXPECT_GE(owned, expected);
    EXPECT_LE(owned, expected + 64 * fp8_kept);
    if (std::get<1>(GetParam()).name.rfind("cpu", 0) == 0) {
        const std::string summary = backend_->weight_summary();
        EXPECT_EQ(summary.rfind(std::to_string(fp8_kept) + " in FP8 e4m3 with block scales", 0), 0u) << summary;
    }
}

INSTANTIATE_TEST_SUITE_P(Fp8Fixtures, Fp8Match,
                         ::testing::Combine(::testing::ValuesIn(fp8_fixture_names()),
                                            ::testing::ValuesIn(backend_factories())),
                         [](const auto& info) {
                             return std::get<0>(info.param) + "_" + std::get<1>(info.param).test_name;
                         });

TEST(Fp8Fixtures, BothBlockSizesArePresent) {
    const auto names = fp8_fixture_names();
    for (const char* want : {"deepseek_v3_fp8", "deepseek_v3_fp8_b32x64"})
        EXPECT_NE(std::find(names.begin(), names.end(), want), names.end()) << "missing fixture " << want;
}

// A copy of the [128, 128] fixture with config.json edited: the load must fail naming what does
// not fit.
class Fp8LoadErrors : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() / ("moe_fp8_load_" + std::to_string(::getpid()));
        fs::remove_all(dir_);
        fs::create_directories(dir_);
        const fs::path src = fp8_fixtures_dir() / "deepseek_v3_fp8";
        for (const char* f : {"model.safetensors", "generation_config.json"}) fs::copy_file(src / f, dir_ / f);
        std::ifstream in(src / "config.json");
        config_ = nlohmann::json::parse(in);
        backend_ = make_cpu_backend({.num_threads = 1});
    }
    void TearDown() override { fs::remove_all(dir_); }
    Status load_with(const nlohmann::json& config) {
        std::ofstream(dir_ / "config.json") << config.dump(2);
        auto m = MoeTransformer::load(dir_, *backend_, {.weight_dtype = WeightDType::kF32});
        return m.status();
    }

    fs::path dir_;
    nlohmann::json config_;
    std::unique_ptr<Backend> backend_;
};

TEST_F(Fp8LoadErrors, BlockSizeThatDoesNotFitTheScales) {
    nlohmann::json c = config_;
    c["quantization_config"]["weight_block_size"] = {64, 128};
    const Status s = load_with(c);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
    EXPECT_NE(s.message().find("weight_scale_inv"), std::string::npos) << s.to_string();
    EXPECT_NE(s.message().find("[64, 128]"), std::string::npos) << s.to_string();
}

TEST_F(Fp8LoadErrors, Fp8TensorsWithoutQuantizationConfig) {
    nlohmann::json c = config_;
    c.erase("quantization_config");
    const Status s = load_with(c);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.message().find("f8_e4m3"), std::string::npos) << s.to_string();
    EXPECT_NE(s.message().find("quantization_config"), std::string::npos) << s.to_string();
}

TEST_F(Fp8LoadErrors, StaticActivationScalesAreRefused) {
    nlohmann::json c = config_;
    c["quantization_config"]["activation_scheme"] = "static";
    const Status s = load_with(c);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), StatusCode::kUnimplemented) << s.to_string();
    EXPECT_NE(s.message().find("activation_scheme \"static\""), std::string::npos) << s.to_string();
}

}  // namespace
}  // namespace moe::testing
