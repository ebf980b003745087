// gpt-oss configs (20b as published, 120b written from the published numbers): layer types,
// YaRN with truncate false, the clamped SwiGLU's limit, parameter counts, the MXFP4 checkpoint's
// size, and the errors that name a bad key.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/json_limits.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "model/mla_attention.h"
#include "model/moe_transformer.h"
#include "model/weights.h"
#include "moe/cpu_backend.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kConfigs = fs::path(MOE_TEST_DATA_DIR) / "configs";

json raw(const std::string& name) {
    auto j = read_json_file(kConfigs / name / "config.json", size_t{1} << 20);
    EXPECT_TRUE(j.ok()) << j.status().to_string();
    return j.ok() ? *j : json::object();
}

StatusOr<ModelConfig> parse(const json& j) {
    return parse_model_config(j, "config.json");
}

TEST(GptOssConfig, Published20b) {
    auto c = parse(raw("gpt-oss-20b"));
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    EXPECT_EQ(c->family, ModelFamily::kGptOss);
    EXPECT_TRUE(c->gpt_oss.enabled);
    EXPECT_EQ(c->num_layers, 24);
    EXPECT_EQ(c->num_experts, 32);
    EXPECT_EQ(c->num_experts_per_tok, 4);
    EXPECT_EQ(c->moe_intermediate_size, 2880);
    EXPECT_EQ(c->head_dim, 64);
    EXPECT_EQ(c->num_kv_heads, 8);
    EXPECT_TRUE(c->attention_bias);
    EXPECT_TRUE(c->norm_topk_prob);
    EXPECT_DOUBLE_EQ(c->gpt_oss.swiglu_limit, 7.0);
    EXPECT_EQ(c->sliding_window, 128);
    ASSERT_EQ(c->layer_sliding.size(), 24u);
    for (int64_t l = 0; l < 24; ++l) EXPECT_EQ(c->window_of(l), l % 2 == 0 ? 128 : 0) << "layer " << l;
    EXPECT_EQ(c->num_sliding_layers(), 12);
    EXPECT_TRUE(c->yarn.enabled);
    EXPECT_FALSE(c->yarn.truncate);
    EXPECT_DOUBLE_EQ(c->yarn.factor, 32.0);
    EXPECT_EQ(c->yarn.original_max_position_embeddings, 4096);
    EXPECT_FLOAT_EQ(c->rope_theta, 150000.0f);
    // K and V of 8 x 64 per layer at bf16.
    EXPECT_EQ(KvCache::bytes_per_block(*c, 1, DType::kBF16), 24 * 2 * 8 * 64 * 2);
    // Published: 20.91B parameters, 3.61B active (the model card counts the unembedding, not the
    // embedding, as active).
    EXPECT_NEAR(static_cast<double>(c->total_params()), 20.91e9, 20.91e9 * 0.005);
    const double active = static_cast<double>(c->active_params_per_token() - c->vocab_size * c->hidden_size);
    EXPECT_NEAR(active, 3.61e9, 3.61e9 * 0.01);
    // The MXFP4 checkpoint: experts at 17 bytes per 32 weights, the rest bf16; the published
    // index's total_size is 13,761,264,768 bytes.
    const int64_t experts = c->routed_expert_weights();
    EXPECT_EQ(experts, int64_t{24} * 32 * 3 * 2880 * 2880);
    const double mxfp4 = static_cast<double>(experts / 32 * 17 + (c->total_params() - experts) * 2);
    EXPECT_NEAR(mxfp4, 13761264768.0, 13761264768.0 * 0.001);
    // The published checkpoint is MXFP4 (served: experts kept as MXFP4, #24); the same config in
    // bf16 is served too.
    EXPECT_TRUE(c->supported) << c->unsupported_reason;
    EXPECT_TRUE(c->quantization.mxfp4());
    EXPECT_EQ(c->quantization.modules_to_not_convert.size(), 4u);
    json bf16 = raw("gpt-oss-20b");
    bf16.erase("quantization_config");
    auto b = parse(bf16);
    ASSERT_TRUE(b.ok()) << b.status().to_string();
    EXPECT_TRUE(b->supported) << b->unsupported_reason;
}

TEST(GptOssConfig, Written120b) {
    auto c = parse(raw("gpt-oss-120b"));
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    EXPECT_EQ(c->num_layers, 36);
    EXPECT_EQ(c->num_experts, 128);
    EXPECT_EQ(c->num_sliding_layers(), 18);
    // Published: 116.83B parameters, 5.13B active.
    EXPECT_NEAR(static_cast<double>(c->total_params()), 116.83e9, 116.83e9 * 0.005);
    const double active = static_cast<double>(c->active_params_per_token() - c->vocab_size * c->hidden_size);
    EXPECT_NEAR(active, 5.13e9, 5.13e9 * 0.01);
}

// transformers' _compute_yarn_parameters with truncate false keeps the fractional correction
// range; true (the default, DeepSeek) floors and ceils it. Values computed with transformers
// 4.57 for head_dim 64, theta 150000, factor 32, original 4096, beta 32 / 1.
TEST(GptOssConfig, YarnTruncateFollowsTransformers) {
    auto c = parse(raw("gpt-oss-20b"));
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    const MlaRope r = rope_frequencies(*c, 64, 64);
    ASSERT_EQ(r.inv_freq.size(), 32u);
    EXPECT_NEAR(r.attention_factor, 0.1 * std::log(32.0) + 1.0, 1e-6);
    EXPECT_FLOAT_EQ(r.softmax_scale, 0.125f);
    EXPECT_FLOAT_EQ(r.inv_freq[0], 1.0f);
    ModelConfig t = *c;
    t.yarn.truncate = true;
    const MlaRope rt = rope_frequencies(t, 64, 64);
    int differ = 0;
    for (size_t i = 0; i < 32; ++i) differ += r.inv_freq[i] != rt.inv_freq[i] ? 1 : 0;
    EXPECT_GT(differ, 0) << "truncate changed nothing";
}

TEST(GptOssConfig, DefaultsAndErrors) {
    json j = raw("gpt-oss-20b");
    j.erase("quantization_config");
    j.erase("layer_types");  // transformers' default: sliding on even layers
    auto c = parse(j);
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    EXPECT_EQ(c->window_of(0), 128);
    EXPECT_EQ(c->window_of(1), 0);

    json short_types = raw("gpt-oss-20b");
    short_types["layer_types"] = json::array({"sliding_attention"});
    auto s = parse(short_types);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.status().message().find("layer_types must be an array of num_hidden_layers (24)"), std::string::npos)
        << s.status().message();

    json bad_type = raw("gpt-oss-20b");
    bad_type["layer_types"][3] = "chunked_attention";
    auto t = parse(bad_type);
    ASSERT_FALSE(t.ok());
    EXPECT_NE(t.status().message().find("layer_types[3]"), std::string::npos) << t.status().message();

    json bad_limit = raw("gpt-oss-20b");
    bad_limit["swiglu_limit"] = -1.0;
    auto l = parse(bad_limit);
    ASSERT_FALSE(l.ok());
    EXPECT_NE(l.status().message().find("swiglu_limit"), std::string::npos) << l.status().message();

    json bad_rope = raw("gpt-oss-20b");
    bad_rope["rope_scaling"]["rope_type"] = "longrope";
    auto r = parse(bad_rope);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("longrope"), std::string::npos) << r.status().message();
}

// The fixture's weights through a source that can lie: a fused expert tensor of the wrong shape
// or a missing sinks tensor is refused at load, naming the tensor and both shapes.
class LyingSource final : public WeightSource {
public:
    LyingSource(WeightStore store, std::string name, std::vector<int64_t> shape, bool drop)
        : store_(std::move(store)), name_(std::move(name)), shape_(std::move(shape)), drop_(drop) {}
    StatusOr<WeightRef> get(const std::string& name) const override {
        if (drop_ && name == name_) return not_found("tensor " + name + " not found");
        MOE_ASSIGN_OR_RETURN(TensorInfo t, store_.get(name));
        WeightRef w{.name = t.name, .dtype = t.dtype, .shape = t.shape, .data = t.data, .origin = t.file};
        if (name == name_) w.shape = shape_;
        return w;
    }
    bool has(const std::string& name) const override { return !(drop_ && name == name_) && store_.has(name); }
    std::string describe() const override { return "lying source"; }

private:
    WeightStore store_;
    std::string name_;
    std::vector<int64_t> shape_;
    bool drop_;
};

TEST(GptOssLoad, BadFusedExpertShapeAndMissingSinksAreNamed) {
    const fs::path dir = fs::path(MOE_SOURCE_DIR) / "tests/reference/fixtures/gpt_oss";
    auto c = load_model_config(dir);
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    std::unique_ptr<Backend> be = make_cpu_backend({.num_threads = 1});
    {
        auto store = WeightStore::open(dir);
        ASSERT_TRUE(store.ok()) << store.status().to_string();
        auto src = std::make_shared<LyingSource>(std::move(store).value(), "model.layers.1.mlp.experts.gate_up_proj",
                                                 std::vector<int64_t>{6, 96, 64}, false);
        auto m = MoeTransformer::create(*c, src, *be, {});
        ASSERT_FALSE(m.ok());
        EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument);
        EXPECT_NE(m.status().message().find("model.layers.1.mlp.experts.gate_up_proj"), std::string::npos)
            << m.status().message();
        EXPECT_NE(m.status().message().find("shape [6, 96, 64], expected [6, 64, 96]"), std::string::npos)
            << m.status().message();
    }
    {
        auto store = WeightStore::open(dir);
        ASSERT_TRUE(store.ok()) << store.status().to_string();
        auto src = std::make_shared<LyingSource>(std::move(store).value(), "model.layers.2.self_attn.sinks",
                                                 std::vector<int64_t>{}, true);
        auto m = MoeTransformer::create(*c, src, *be, {});
        ASSERT_FALSE(m.ok());
        EXPECT_NE(m.status().message().find("model.layers.2.self_attn.sinks"), std::string::npos)
            << m.status().message();
    }
    // The same model with a quantization_config (as the published MXFP4 files) is refused.
    ModelConfig q = *c;
    q.supported = false;
    q.unsupported_reason = "quantized";
    auto store = WeightStore::open(dir);
    ASSERT_TRUE(store.ok());
    auto refused = MoeTransformer::create(
        q, std::make_shared<LyingSource>(std::move(store).value(), "", std::vector<int64_t>{}, false), *be, {});
    EXPECT_EQ(refused.status().code(), StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace moe
