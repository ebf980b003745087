// ModelConfig parsing: real Hugging Face configs, every sanity check, parameter counts.
#include "model/config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

namespace moe {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kConfigs = fs::path(MOE_TEST_DATA_DIR) / "configs";

ModelConfig load_ok(const std::string& name) {
    auto c = load_model_config(kConfigs / name);
    EXPECT_TRUE(c.ok()) << c.status().to_string();
    return c.ok() ? *c : ModelConfig{};
}

TEST(ConfigReal, EveryConfigParses) {
    int n = 0;
    for (const auto& entry : fs::directory_iterator(kConfigs)) {
        if (!fs::exists(entry.path() / "config.json")) continue;
        auto c = load_model_config(entry.path());
        EXPECT_TRUE(c.ok()) << entry.path() << ": " << c.status().to_string();
        if (c.ok()) {
            EXPECT_GT(c->total_params(), 0) << entry.path();
            EXPECT_LE(c->active_params_per_token(), c->total_params()) << entry.path();
            EXPECT_EQ(c->layer_is_moe.size(), static_cast<size_t>(c->num_layers));
        }
        ++n;
    }
    EXPECT_GE(n, 7);
}

TEST(ConfigReal, Mixtral8x7b) {
    ModelConfig c = load_ok("mixtral-8x7b");
    EXPECT_EQ(c.family, ModelFamily::kMixtral);
    EXPECT_TRUE(c.supported);
    EXPECT_EQ(c.architecture, "MixtralForCausalLM");
    EXPECT_EQ(c.num_layers, 32);
    EXPECT_EQ(c.hidden_size, 4096);
    EXPECT_EQ(c.num_heads, 32);
    EXPECT_EQ(c.num_kv_heads, 8);
    EXPECT_EQ(c.head_dim, 128);
    EXPECT_EQ(c.rotary_dim, 128);
    EXPECT_EQ(c.num_experts, 8);
    EXPECT_EQ(c.num_experts_per_tok, 2);
    EXPECT_EQ(c.moe_intermediate_size, 14336);
    EXPECT_EQ(c.intermediate_size, 0);  // no dense layers
    EXPECT_TRUE(c.norm_topk_prob);
    EXPECT_EQ(c.vocab_size, 32000);
    EXPECT_EQ(c.sliding_window, 0);  // null in the file
    EXPECT_FLOAT_EQ(c.rope_theta, 1e6f);
    EXPECT_FLOAT_EQ(c.rms_norm_eps, 1e-5f);
    EXPECT_EQ(c.torch_dtype, DType::kBF16);
    EXPECT_EQ(c.bos_token_id, 1);
    EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>({2}));
    EXPECT_EQ(c.qk_norm, QkNorm::kNone);
    EXPECT_FALSE(c.attention_bias);
    for (bool m : c.layer_is_moe) EXPECT_TRUE(m);
}

TEST(ConfigReal, Mixtral8x7bParamCounts) {
    ModelConfig c = load_ok("mixtral-8x7b");
    // Published: 46.7B total, 12.9B active. The checkpoint index says 93405585408 bytes of bf16.
    EXPECT_NEAR(static_cast<double>(c.total_params()), 46.7e9, 46.7e9 * 0.01);
    EXPECT_NEAR(static_cast<double>(c.active_params_per_token()), 12.9e9, 12.9e9 * 0.01);
    EXPECT_EQ(c.total_params() * 2, int64_t{93405585408});
}

// The published FP8 checkpoint is served as stored (#20): its quantization_config is read.
TEST(ConfigReal, DeepseekV3Fp8Served) {
    ModelConfig c = load_ok("deepseek-v3");
    EXPECT_EQ(c.family, ModelFamily::kDeepseekV3);
    EXPECT_TRUE(c.supported) << c.unsupported_reason;
    EXPECT_TRUE(c.quantization.fp8);
    EXPECT_EQ(c.quantization.block_n, 128);
    EXPECT_EQ(c.quantization.block_k, 128);
    EXPECT_EQ(c.num_layers, 61);
    EXPECT_EQ(c.num_experts, 256);
    EXPECT_EQ(c.num_experts_per_tok, 8);
    EXPECT_EQ(c.moe_intermediate_size, 2048);
    EXPECT_EQ(c.shared_expert_intermediate_size, 2048);
    EXPECT_EQ(c.intermediate_size, 18432);  // the first 3 dense layers
    ASSERT_GE(c.layer_is_moe.size(), 4u);   // a config that did not load fails here, not by a crash
    EXPECT_FALSE(c.layer_is_moe[2]);
    EXPECT_TRUE(c.layer_is_moe[3]);
    EXPECT_EQ(c.head_dim, 192);
    EXPECT_EQ(c.rotary_dim, 64);
}

TEST(ConfigReal, KimiK2IsDeepseekFamily) {
    ModelConfig c = load_ok("kimi-k2");
    EXPECT_EQ(c.family, ModelFamily::kDeepseekV3);
    EXPECT_EQ(c.model_type, "kimi_k2");
    EXPECT_TRUE(c.supported) << c.unsupported_reason;  // FP8 e4m3 [128, 128], as DeepSeek-V3
    EXPECT_TRUE(c.quantization.fp8);
    EXPECT_EQ(c.num_experts, 384);
    EXPECT_EQ(c.num_heads, 64);
    EXPECT_FLOAT_EQ(c.rope_theta, 50000.0f);
    // config.json says 163585, generation_config.json 163586: merged.
    EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>({163585, 163586}));
    ASSERT_GE(c.layer_is_moe.size(), 2u);  // a config that did not load fails here, not by a crash
    EXPECT_FALSE(c.layer_is_moe[0]);
    EXPECT_TRUE(c.layer_is_moe[1]);
}

TEST(ConfigReal, GptOss20b) {
    ModelConfig c = load_ok("gpt-oss-20b");
    EXPECT_EQ(c.family, ModelFamily::kGptOss);
    EXPECT_TRUE(c.supported) << c.unsupported_reason;  // MXFP4 experts kept as MXFP4 (#24)
    EXPECT_TRUE(c.quantization.mxfp4());
    EXPECT_EQ(c.num_experts, 32);
    EXPECT_EQ(c.num_experts_per_tok, 4);
    EXPECT_EQ(c.moe_intermediate_size, 2880);
    EXPECT_EQ(c.head_dim, 64);
    EXPECT_EQ(c.sliding_window, 128);
    // 200002 in both files, 199999 only in generation_config.json: deduplicated.
    EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>({200002, 199999}));
    EXPECT_NEAR(static_cast<double>(c.total_params()), 20.9e9, 20.9e9 * 0.03);
}

TEST(ConfigReal, Glm45AndDeepseekV2AreUnknownButParsed) {
    ModelConfig g = load_ok("glm-4.5");
    EXPECT_EQ(g.family, ModelFamily::kUnknown);
    EXPECT_FALSE(g.supported);
    EXPECT_NE(g.unsupported_reason.find("Glm4MoeForCausalLM"), std::string::npos);
    EXPECT_EQ(g.num_experts, 160);
    EXPECT_EQ(g.head_dim, 128);
    EXPECT_EQ(g.rotary_dim, 64);  // partial_rotary_factor 0.5
    EXPECT_EQ(g.eos_token_ids, std::vector<int64_t>({151329, 151336, 151338}));
    ModelConfig d = load_ok("deepseek-v2-lite");
    EXPECT_FALSE(d.supported);
    EXPECT_EQ(d.num_experts, 64);
    EXPECT_EQ(d.num_experts_per_tok, 6);
}

// ---- synthetic configs for the families without a real file here ----------------------------

json qwen3_moe_base() {
    return json::parse(R"({
        "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
        "vocab_size": 151936, "hidden_size": 2048, "num_hidden_layers": 48,
        "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
        "intermediate_size": 6144, "moe_intermediate_size": 768, "num_experts": 128,
        "num_experts_per_tok": 8, "norm_topk_prob": true, "decoder_sparse_step": 1,
        "mlp_only_layers": [], "rope_theta": 1000000.0, "max_position_embeddings": 40960,
        "rms_norm_eps": 1e-06, "sliding_window": null, "use_sliding_window": false,
        "tie_word_embeddings": false, "torch_dtype": "bfloat16", "eos_token_id": 151645})");
}

TEST(ConfigSynthetic, Qwen3Moe30bA3b) {
    auto c = parse_model_config(qwen3_moe_base(), "config.json");
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    EXPECT_EQ(c->family, ModelFamily::kQwen3Moe);
    EXPECT_TRUE(c->supported);
    EXPECT_EQ(c->qk_norm, QkNorm::kPerHead);
    EXPECT_TRUE(c->norm_topk_prob);
    EXPECT_EQ(c->head_dim, 128);  // not hidden/heads = 64
    EXPECT_EQ(c->intermediate_size, 0);
    // Qwen3-30B-A3B: 30.5B total, 3.3B active.
    EXPECT_NEAR(static_cast<double>(c->total_params()), 30.5e9, 30.5e9 * 0.01);
    EXPECT_NEAR(static_cast<double>(c->active_params_per_token()), 3.3e9, 3.3e9 * 0.03);
}

TEST(ConfigSynthetic, Qwen3MoeSparseStepAndMlpOnlyLayers) {
    json j = qwen3_moe_base();
    j["num_hidden_layers"] = 6;
    j["decoder_sparse_step"] = 2;
    j["mlp_only_layers"] = {3};
    auto c = parse_model_config(j, "config.json");
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    // MoE iff not in mlp_only_layers and (i + 1) % 2 == 0: layers 1 and 5 (3 is excluded).
    EXPECT_EQ(c->layer_is_moe, std::vector<bool>({false, true, false, false, false, true}));
    EXPECT_EQ(c->intermediate_size, 6144);
}

TEST(ConfigSynthetic, Qwen2MoeSharedExpertAndBias) {
    json j = json::parse(R"({"architectures": ["Qwen2MoeForCausalLM"], "vocab_size": 151936,
        "hidden_size": 2048, "num_hidden_layers": 24, "num_attention_heads": 16, "num_key_value_heads": 16,
        "intermediate_size": 5632, "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632,
        "num_experts": 60, "num_experts_per_tok": 4, "eos_token_id": [151643, 151645]})");
    auto c = parse_model_config(j, "config.json");
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    EXPECT_EQ(c->family, ModelFamily::kQwen2Moe);
    EXPECT_TRUE(c->attention_bias);
    EXPECT_EQ(c->qk_norm, QkNorm::kNone);
    EXPECT_EQ(c->shared_expert_intermediate_size, 5632);
    EXPECT_FALSE(c->norm_topk_prob);
    EXPECT_EQ(c->eos_token_ids.size(), 2u);
    // Qwen1.5-MoE-A2.7B: 14.3B total, 2.7B active.
    EXPECT_NEAR(static_cast<double>(c->total_params()), 14.3e9, 14.3e9 * 0.02);
    EXPECT_NEAR(static_cast<double>(c->active_params_per_token()), 2.7e9, 2.7e9 * 0.03);
}

TEST(ConfigSynthetic, OlmoeDefaults) {
    json j = json::parse(R"({"architectures": ["OlmoeForCausalLM"], "vocab_size": 50304, "hidden_size": 2048,
        "num_hidden_layers": 16, "num_attention_heads": 16, "intermediate_size": 1024, "num_experts": 64,
        "num_experts_per_tok": 8})");
    auto c = parse_model_config(j, "config.json");
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    EXPECT_EQ(c->family, ModelFamily::kOlmoe);
    EXPECT_EQ(c->qk_norm, QkNorm::kFull);
    EXPECT_FALSE(c->norm_topk_prob);  // transformers default
    EXPECT_EQ(c->num_kv_heads, 16);   // defaults to num_attention_heads
    EXPECT_EQ(c->moe_intermediate_size, 1024);
    // OLMoE-1B-7B: 6.9B total, 1.3B active.
    EXPECT_NEAR(static_cast<double>(c->total_params()), 6.92e9, 6.92e9 * 0.02);
    EXPECT_NEAR(static_cast<double>(c->active_params_per_token()), 1.28e9, 1.28e9 * 0.03);
}

TEST(ConfigSynthetic, DenseLlamaAndQwen3) {
    json j = json::parse(R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 32000, "hidden_size": 4096,
        "num_hidden_layers": 32, "num_attention_heads": 32, "intermediate_size": 11008,
        "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"}, "dtype": "float16"})");
    auto c = parse_model_config(j, "config.json");
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    EXPECT_EQ(c->family, ModelFamily::kLlama);
    EXPECT_EQ(c->num_experts, 0);
    for (bool m : c->layer_is_moe) EXPECT_FALSE(m);
    EXPECT_FLOAT_EQ(c->rope_theta, 500000.0f);
    EXPECT_EQ(c->torch_dtype, DType::kF16);
    EXPECT_NEAR(static_cast<double>(c->total_params()), 6.74e9, 6.74e9 * 0.01);  // Llama-2-7B
    EXPECT_EQ(c->total_params(), c->active_params_per_token());

    j["architectures"] = {"Qwen3ForCausalLM"};
    j["tie_word_embeddings"] = true;
    auto q = parse_model_config(j, "config.json");
    ASSERT_TRUE(q.ok()) << q.status().to_string();
    EXPECT_EQ(q->qk_norm, QkNorm::kPerHead);
    EXPECT_EQ(q->head_dim, 128);
    // Tied: lm_head is not counted twice.
    EXPECT_EQ(c->total_params() - q->total_params(), 32000 * 4096 - 32 * 2 * 128);
}

// ---- bad configs: each check names config.json and the key ----------------------------------

void expect_bad(const json& j, const std::string& needle) {
    auto c = parse_model_config(j, "/m/config.json");
    ASSERT_FALSE(c.ok()) << "accepted a config that should fail with " << needle;
    EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(c.status().message().find("/m/config.json"), std::string::npos) << c.status().message();
    EXPECT_NE(c.status().message().find(needle), std::string::npos) << c.status().message();
}

TEST(ConfigBad, MissingRequiredKeys) {
    for (const char* key : {"hidden_size", "vocab_size", "num_hidden_layers", "num_attention_heads"}) {
        json j = qwen3_moe_base();
        j.erase(key);
        expect_bad(j, key);
    }
    json j = qwen3_moe_base();
    j.erase("architectures");
    j.erase("model_type");
    expect_bad(j, "architectures");
}

TEST(ConfigBad, WrongJsonTypes) {
    json j = qwen3_moe_base();
    j["hidden_size"] = "2048";
    expect_bad(j, "hidden_size must be an integer");
    j = qwen3_moe_base();
    j["num_experts"] = 1.5;
    expect_bad(j, "num_experts");
    j = qwen3_moe_base();
    j["norm_topk_prob"] = "yes";
    expect_bad(j, "norm_topk_prob");
    j = qwen3_moe_base();
    j["architectures"] = "Qwen3MoeForCausalLM";
    expect_bad(j, "architectures");
    j = qwen3_moe_base();
    j["mlp_only_layers"] = 3;
    expect_bad(j, "mlp_only_layers");
    j = qwen3_moe_base();
    j["eos_token_id"] = "x";
    expect_bad(j, "eos_token_id");
    j = qwen3_moe_base();
    j["torch_dtype"] = "int4";
    expect_bad(j, "torch_dtype");
    EXPECT_FALSE(parse_model_config(json::array(), "config.json").ok());
}

TEST(ConfigBad, ZeroNegativeAbsurdValues) {
    const std::vector<std::pair<const char*, int64_t>> cases = {{"hidden_size", 0},
                                                                {"hidden_size", -4096},
                                                                {"hidden_size", 65537},
                                                                {"vocab_size", (1 << 24) + 1},
                                                                {"num_hidden_layers", 1025},
                                                                {"num_attention_heads", 1025},
                                                                {"num_experts", 4097},
                                                                {"moe_intermediate_size", (1 << 20) + 1},
                                                                {"intermediate_size", -1},
                                                                {"num_key_value_heads", 0},
                                                                {"max_position_embeddings", 0}};
    for (const auto& [key, value] : cases) {
        json j = qwen3_moe_base();
        j[key] = value;
        SCOPED_TRACE(std::string(key) + "=" + std::to_string(value));
        expect_bad(j, key);
    }
    json j = qwen3_moe_base();
    j["hidden_size"] = 1e30;
    expect_bad(j, "hidden_size");
    j = qwen3_moe_base();
    j["rms_norm_eps"] = 0.0;
    expect_bad(j, "rms_norm_eps");
}

TEST(ConfigBad, TopKAboveExperts) {
    json j = qwen3_moe_base();
    j["num_experts"] = 8;
    j["num_experts_per_tok"] = 9;
    expect_bad(j, "num_experts_per_tok (9) > num_experts (8)");
}

TEST(ConfigBad, HeadsDivisibility) {
    json j = qwen3_moe_base();
    j.erase("head_dim");
    j["num_attention_heads"] = 24;  // 2048 % 24 != 0
    j["num_key_value_heads"] = 4;
    expect_bad(j, "hidden_size (2048) is not divisible by num_attention_heads (24)");
    j = qwen3_moe_base();
    j["num_key_value_heads"] = 5;
    expect_bad(j, "num_attention_heads (32) is not divisible by num_key_value_heads (5)");
}

TEST(ConfigBad, OddRotaryDims) {
    json j = qwen3_moe_base();
    j["head_dim"] = 127;
    expect_bad(j, "rotary dims");
    j = qwen3_moe_base();
    j["partial_rotary_factor"] = 0.25;
    j["head_dim"] = 36;  // 9
    expect_bad(j, "partial_rotary_factor");
}

TEST(ConfigBad, SparseStepAndMlpOnlyLayers) {
    json j = qwen3_moe_base();
    j["decoder_sparse_step"] = 0;
    expect_bad(j, "decoder_sparse_step (0)");
    j["decoder_sparse_step"] = -2;
    expect_bad(j, "decoder_sparse_step (-2)");
    j = qwen3_moe_base();
    j["mlp_only_layers"] = {0, 48};
    expect_bad(j, "mlp_only_layers index 48 out of range");
    j["mlp_only_layers"] = {-1};
    expect_bad(j, "mlp_only_layers index -1 out of range");
}

TEST(ConfigBad, FileErrors) {
    const fs::path dir = fs::temp_directory_path() / ("moe_cfg_test_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    auto missing = load_model_config(dir);
    EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
    EXPECT_NE(missing.status().message().find("config.json"), std::string::npos);
    std::ofstream(dir / "config.json") << "{\"architectures\": [\"MixtralForCausalLM\"], ";
    auto broken = load_model_config(dir);
    EXPECT_EQ(broken.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(broken.status().message().find("not valid JSON"), std::string::npos) << broken.status().message();
    fs::remove_all(dir);
}

}  // namespace
}  // namespace moe
