// DeepSeek-V3 / R1 / Kimi K2 configs: the MLA, YaRN and grouped-routing fields, the latent KV
// cache's bytes per token, parameter counts, and the checks that keep the router in range.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <tuple>

#include "core/json_limits.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "model/mla_attention.h"

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

TEST(DeepseekConfig, V3FieldsKvBytesAndParameters) {
    auto c = parse(raw("deepseek-v3"));
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    ASSERT_TRUE(c->is_mla());
    EXPECT_EQ(c->mla.q_lora_rank, 1536);
    EXPECT_EQ(c->mla.kv_lora_rank, 512);
    EXPECT_EQ(c->mla.qk_nope_head_dim, 128);
    EXPECT_EQ(c->mla.qk_rope_head_dim, 64);
    EXPECT_EQ(c->mla.v_head_dim, 128);
    EXPECT_TRUE(c->mla.rope_interleave);  // absent: transformers' default
    EXPECT_TRUE(c->yarn.enabled);
    EXPECT_DOUBLE_EQ(c->yarn.factor, 40.0);
    EXPECT_EQ(c->yarn.original_max_position_embeddings, 4096);
    EXPECT_DOUBLE_EQ(c->yarn.mscale_all_dim, 1.0);
    EXPECT_TRUE(c->group_routing.enabled);
    EXPECT_EQ(c->group_routing.num_groups, 8);
    EXPECT_EQ(c->group_routing.topk_groups, 4);
    EXPECT_DOUBLE_EQ(c->group_routing.routed_scaling_factor, 2.5);
    EXPECT_TRUE(c->norm_topk_prob);
    EXPECT_EQ(c->num_nextn_predict_layers, 1);
    // (512 + 64) x 61 layers x 2 bytes.
    EXPECT_EQ(KvCache::bytes_per_block(*c, 1, DType::kBF16), 70272);
    // Published: 671B parameters (the MTP module's 14B not counted), 37B active.
    EXPECT_NEAR(static_cast<double>(c->total_params()), 671e9, 671e9 * 0.005);
    EXPECT_NEAR(static_cast<double>(c->active_params_per_token()), 37.5e9, 37.5e9 * 0.03);
    // Published FP8 checkpoint (e4m3, 128 x 128 blocks): served as stored; the same config in
    // bf16 too.
    EXPECT_TRUE(c->supported) << c->unsupported_reason;
    EXPECT_TRUE(c->quantization.fp8);
    EXPECT_EQ(c->quantization.block_n, 128);
    EXPECT_EQ(c->quantization.block_k, 128);
    json bf16 = raw("deepseek-v3");
    bf16.erase("quantization_config");
    auto b = parse(bf16);
    ASSERT_TRUE(b.ok()) << b.status().to_string();
    EXPECT_TRUE(b->supported) << b->unsupported_reason;
    EXPECT_FALSE(b->quantization.fp8);
}

// quantization_config variants: another block read as given; other kinds refused with the reason
// (the config still parses, for `info`); malformed block sizes are errors naming the key.
TEST(DeepseekConfig, QuantizationConfigVariants) {
    auto with = [](const char* key, json value) {
        json j = raw("deepseek-v3");
        j["quantization_config"][key] = std::move(value);
        return parse(j);
    };
    auto other_block = with("weight_block_size", json::array({64, 32}));
    ASSERT_TRUE(other_block.ok()) << other_block.status().to_string();
    EXPECT_TRUE(other_block->supported);
    EXPECT_EQ(other_block->quantization.block_n, 64);
    EXPECT_EQ(other_block->quantization.block_k, 32);
    const std::tuple<const char*, json, const char*> refused[] = {
        {"activation_scheme", "static", "activation_scheme \"static\""},
        {"fmt", "e5m2", "fmt \"e5m2\""},
        {"quant_method", "awq", "quant_method \"awq\""}};
    for (const auto& [key, value, want] : refused) {
        auto c = with(key, value);
        ASSERT_TRUE(c.ok()) << key << ": " << c.status().to_string();
        EXPECT_FALSE(c->supported) << key;
        EXPECT_NE(c->unsupported_reason.find(want), std::string::npos) << c->unsupported_reason;
    }
    json per_tensor = raw("deepseek-v3");
    per_tensor["quantization_config"].erase("weight_block_size");
    auto pt = parse(per_tensor);
    ASSERT_TRUE(pt.ok()) << pt.status().to_string();
    EXPECT_FALSE(pt->supported);
    EXPECT_NE(pt->unsupported_reason.find("weight_block_size"), std::string::npos) << pt->unsupported_reason;
    for (json bad : {json::array({128}), json::array({0, 128}), json::array({128, 5000}), json("128")}) {
        auto c = with("weight_block_size", bad);
        ASSERT_FALSE(c.ok()) << bad.dump();
        EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
        EXPECT_NE(c.status().message().find("weight_block_size"), std::string::npos) << c.status().to_string();
    }
}

TEST(DeepseekConfig, R1AndKimiK2) {
    auto r1 = parse(raw("deepseek-r1"));
    ASSERT_TRUE(r1.ok()) << r1.status().to_string();
    EXPECT_EQ(KvCache::bytes_per_block(*r1, 1, DType::kBF16), 70272);
    auto k2 = parse(raw("kimi-k2"));
    ASSERT_TRUE(k2.ok()) << k2.status().to_string();
    EXPECT_TRUE(k2->is_mla());
    EXPECT_EQ(k2->group_routing.num_groups, 1);
    EXPECT_NEAR(k2->group_routing.routed_scaling_factor, 2.827, 1e-9);
    EXPECT_EQ(k2->num_nextn_predict_layers, 0);
    EXPECT_EQ(KvCache::bytes_per_block(*k2, 1, DType::kBF16), (512 + 64) * 61 * 2);
    // Published: 1T total (1.04T), 32B active.
    EXPECT_NEAR(static_cast<double>(k2->total_params()), 1.03e12, 1.03e12 * 0.02);
    EXPECT_NEAR(static_cast<double>(k2->active_params_per_token()), 32.9e9, 32.9e9 * 0.05);
}

TEST(DeepseekConfig, V2LiteIsSizedButNotServed) {
    auto c = load_model_config(kConfigs / "deepseek-v2-lite");
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    EXPECT_FALSE(c->supported);
    EXPECT_EQ(c->mla.q_lora_rank, 0);  // "q_lora_rank": null
    EXPECT_EQ(KvCache::bytes_per_block(*c, 1, DType::kBF16), (512 + 64) * 27 * 2);
    EXPECT_NEAR(static_cast<double>(c->total_params()), 15.7e9, 15.7e9 * 0.02);
}

// kAuto's choice on DeepSeek-V3's shapes: prompts expand, decodes absorb, mixed steps by their sum.
TEST(DeepseekConfig, AutoPathPicksTheCheaperOne) {
    auto c = parse(raw("deepseek-v3"));
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    const auto pick = [&](std::vector<int32_t> q_lens, std::vector<int32_t> kv_lens) {
        std::vector<int32_t> qs = {0};
        for (int32_t q : q_lens) qs.push_back(qs.back() + q);
        return cheaper_path(*c, qs, kv_lens);
    };
    EXPECT_EQ(pick({1000}, {1000}), MlaPath::kExpanded);  // a whole prompt
    EXPECT_EQ(pick({512}, {4096}), MlaPath::kExpanded);   // a chunk after a cached prefix
    EXPECT_EQ(pick({1}, {2048}), MlaPath::kAbsorbed);     // decode
    EXPECT_EQ(pick({1, 1, 1, 1}, {100, 9, 4000, 1}), MlaPath::kAbsorbed);
    std::vector<int32_t> q(16, 1), kv(16, 4096);  // 15 long decodes and a small chunk
    q[0] = 64;
    EXPECT_EQ(pick(q, kv), MlaPath::kAbsorbed);
    EXPECT_EQ(pick({2048, 1}, {2048, 100}), MlaPath::kExpanded);  // a long prompt and one short decode
}

// Each bad value is refused naming the key and the limit.
TEST(DeepseekConfig, RouterAndMlaChecks) {
    struct Case {
        const char* key;
        json value;
        const char* message;
    };
    const Case cases[] = {
        {"n_group", 7, "n_routed_experts (256) is not divisible by n_group (7)"},
        {"topk_group", 9, "topk_group (9) > n_group (8)"},
        {"num_experts_per_tok", 200, "num_experts_per_tok (200) > the experts of topk_group groups (128)"},
        {"n_group", 256, "n_routed_experts / n_group (1) must be >= 2"},
        {"topk_method", "greedy", "topk_method \"greedy\" is not supported"},
        {"scoring_func", "softmax", "scoring_func \"softmax\" is not supported"},
        {"kv_lora_rank", 0, "kv_lora_rank (0) must be in [1, 65536]"},
        {"kv_lora_rank", -3, "kv_lora_rank (-3) must be in"},
        {"v_head_dim", 1 << 20, "v_head_dim (1048576) must be in [1, 4096]"},
        {"q_lora_rank", "big", "q_lora_rank must be an integer"},
        {"num_nextn_predict_layers", 5000, "num_nextn_predict_layers (5000) must be in [0, 1024]"},
        {"attention_bias", true, "attention_bias true is not supported"},
    };
    for (const Case& k : cases) {
        json j = raw("deepseek-v3");
        j[k.key] = k.value;
        auto c = parse(j);
        ASSERT_FALSE(c.ok()) << k.key;
        EXPECT_NE(c.status().message().find(k.message), std::string::npos) << k.key << ": " << c.status().to_string();
    }
    json j = raw("deepseek-v3");
    j["rope_scaling"]["type"] = "longrope";
    auto c = parse(j);
    ASSERT_FALSE(c.ok());
    EXPECT_NE(c.status().message().find("rope_scaling type \"longrope\""), std::string::npos) << c.status().to_string();
    j = raw("deepseek-v3");
    j["rope_scaling"]["factor"] = -1;
    c = parse(j);
    ASSERT_FALSE(c.ok());
    EXPECT_NE(c.status().message().find("factor"), std::string::npos) << c.status().to_string();
}

}  // namespace
}  // namespace moe
