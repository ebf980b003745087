// The moeserve binary as a user runs it: a subprocess, its exit code, stdout and stderr.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

namespace {

struct Result {
    int exit_code = -1;
    std::string out;  // stdout and stderr, interleaved
};

Result run(const std::string& args) {
    const std::string cmd = std::string(MOESERVE_BIN) + " " + args + " 2>&1";
    Result r;
    FILE* p = popen(cmd.c_str(), "r");
    if (p == nullptr) return r;
    std::array<char, 4096> buf;
    size_t n;
    while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
    const int status = pclose(p);
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return r;
}

std::string fixture(const std::string& name) {
    return std::string(MOE_SOURCE_DIR) + "/tests/reference/fixtures/" + name;
}

std::string join(const std::vector<int>& v) {
    std::string s;
    for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
    return s;
}

TEST(CliRun, GreedyIdsEqualTransformersForEveryFixture) {
    for (const char* name : {"mixtral", "qwen3_moe", "qwen2_moe", "olmoe"}) {
        std::ifstream in(fixture(name) + "/reference.json");
        const auto ref = nlohmann::json::parse(in);
        const auto prompt = ref["prompts"][0].get<std::vector<int>>();
        const auto greedy = ref["greedy"][0].get<std::vector<int>>();
        Result r = run("run --model " + fixture(name) + " --prompt-ids " + join(prompt) +
                       " --max-tokens 16 --ignore-eos --threads 2 --json --log-level warn");
        ASSERT_EQ(r.exit_code, 0) << name << ": " << r.out;
        const auto line = r.out.substr(0, r.out.find('\n'));
        const auto j = nlohmann::json::parse(line);
        EXPECT_EQ(j["ids"].get<std::vector<int>>(), greedy) << name;
        ASSERT_EQ(j["logprobs"].size(), 16u);
        for (const auto& lp : j["logprobs"]) EXPECT_LE(lp.get<double>(), 0.0);
        EXPECT_EQ(j["finish_reason"], "length");
    }
}

TEST(CliRun, PlainOutputIsCommaSeparatedIds) {
    Result r = run("run --model " + fixture("qwen3_moe") + " --prompt-ids 6,147,254 --max-tokens 4 --threads 1");
    ASSERT_EQ(r.exit_code, 0) << r.out;
    EXPECT_NE(r.out.find("generated"), std::string::npos) << r.out;
}

TEST(CliRun, DemoModelWorksWithoutAModel) {
    Result r = run("run --prompt-ids 1,2,3 --max-tokens 3 --threads 1 --json");
    ASSERT_EQ(r.exit_code, 0) << r.out;
    EXPECT_NE(r.out.find("built-in demo model"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("\"ids\""), std::string::npos) << r.out;
}

TEST(CliRun, BadInputGetsAClearError) {
    Result r = run("run --model " + fixture("qwen3_moe") + " --prompt-ids 1,x,3");
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.out.find("--prompt-ids"), std::string::npos) << r.out;

    r = run("run --model " + fixture("qwen3_moe") + " --prompt-ids 1,999999 --max-tokens 2");
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.out.find("999999"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("vocabulary"), std::string::npos) << r.out;

    r = run("run --model " + fixture("qwen3_moe") + " --prompt-ids 1 --max-tokens 1000");
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.out.find("context length"), std::string::npos) << r.out;

    r = run("run --model " + fixture("qwen3_moe") + " --prompt-ids 1 --kv-cache-dtype f16");
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.out.find("--kv-cache-dtype"), std::string::npos) << r.out;

    r = run("run --model /nonexistent/model --prompt-ids 1");
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.out.find("/nonexistent/model"), std::string::npos) << r.out;
}

bool cpu_has_avx512_bf16() {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("flags", 0) == 0) return line.find(" avx512_bf16") != std::string::npos;
    return false;
}

// --compress-weights: on by default (every matrix loads in the 12-bit form, which the load log
// counts), off keeps plain panels; both serve the same bf16 values, so the same greedy ids.
// --compress-experts and MOESERVE_COMPRESS_EXPERTS, the earlier names, still work.
TEST(CliRun, CompressWeightsSwitchesTheMatrixLayout) {
    const std::string base = "run --model " + fixture("qwen3_moe") +
                             " --dtype bf16 --prompt-ids 6,147,254,31 --max-tokens 8 --ignore-eos --threads 2 --json "
                             "--log-level info";
    Result on = run(base);
    Result off = run(base + " --compress-weights false");
    Result off_old_name = run(base + " --compress-experts false");
    ASSERT_EQ(on.exit_code, 0) << on.out;
    ASSERT_EQ(off.exit_code, 0) << off.out;
    ASSERT_EQ(off_old_name.exit_code, 0) << off_old_name.out;
    EXPECT_EQ(off.out.find("12-bit form"), std::string::npos) << off.out;
    EXPECT_EQ(off_old_name.out.find("12-bit form"), std::string::npos) << off_old_name.out;
    // The environment variables, the old name too (the new one wins when both are set).
    setenv("MOESERVE_COMPRESS_EXPERTS", "false", 1);
    Result off_old_env = run(base);
    setenv("MOESERVE_COMPRESS_WEIGHTS", "true", 1);
    Result on_both_env = run(base);
    unsetenv("MOESERVE_COMPRESS_EXPERTS");
    setenv("MOESERVE_COMPRESS_WEIGHTS", "false", 1);
    Result off_env = run(base);
    unsetenv("MOESERVE_COMPRESS_WEIGHTS");
    ASSERT_EQ(off_old_env.exit_code, 0) << off_old_env.out;
    ASSERT_EQ(off_env.exit_code, 0) << off_env.out;
    EXPECT_EQ(off_old_env.out.find("12-bit form"), std::string::npos) << off_old_env.out;
    EXPECT_EQ(off_env.out.find("12-bit form"), std::string::npos) << off_env.out;
    auto ids = [](const std::string& out) {
        const size_t at = out.find("{\"");
        return at == std::string::npos ? nlohmann::json()
                                       : nlohmann::json::parse(out.substr(at, out.find('\n', at) - at))["ids"];
    };
    EXPECT_EQ(ids(on.out), ids(off.out)) << on.out << "\n" << off.out;
    EXPECT_EQ(ids(on.out).size(), 8u) << on.out;
    Result bad = run(base + " --compress-weights maybe");
    EXPECT_NE(bad.exit_code, 0);
    EXPECT_NE(bad.out.find("--compress-weights"), std::string::npos) << bad.out;
    if (!cpu_has_avx512_bf16()) GTEST_SKIP() << "no AVX512-BF16: the CPU backend packs no panels here";
    // The fixture: 3 layers of 4 attention projections, two MoE layers of 8 experts x 3 matrices,
    // one dense MLP layer (mlp_only_layers) of 3, and lm_head: 12 + 48 + 3 + 1.
    EXPECT_NE(on.out.find(", 64 in the lossless 12-bit form"), std::string::npos) << on.out;
    EXPECT_NE(on_both_env.out.find(", 64 in the lossless 12-bit form"), std::string::npos) << on_both_env.out;
}

// --cpu-matmul: the log names who multiplies by the panels; own, onednn and onednn-prefill give
// the same greedy ids on the fixture (the same bf16 products, summed in another f32 order); auto names the route
// it took; a bad value is refused with the choices; MOESERVE_CPU_MATMUL sets it too.
TEST(CliRun, CpuMatmulPicksWhoMultipliesByThePanels) {
    const std::string base = "run --model " + fixture("qwen3_moe") +
                             " --dtype bf16 --prompt-ids 6,147,254,31 --max-tokens 8 --ignore-eos --threads 2 --json "
                             "--log-level info";
    auto ids = [](const std::string& out) {
        const size_t at = out.find("{\"");
        return at == std::string::npos ? nlohmann::json()
                                       : nlohmann::json::parse(out.substr(at, out.find('\n', at) - at))["ids"];
    };
    Result bad = run(base + " --cpu-matmul amx");
    EXPECT_NE(bad.exit_code, 0);
    EXPECT_NE(bad.out.find("--cpu-matmul"), std::string::npos) << bad.out;
    EXPECT_NE(bad.out.find("onednn"), std::string::npos) << bad.out;
    Result automatic = run(base);
    ASSERT_EQ(automatic.exit_code, 0) << automatic.out;
    EXPECT_NE(automatic.out.find("bf16 products: "), std::string::npos) << automatic.out;
    EXPECT_NE(automatic.out.find("(--cpu-matmul auto)"), std::string::npos) << automatic.out;
    if (!cpu_has_avx512_bf16()) GTEST_SKIP() << "no AVX512-BF16: the CPU backend packs no panels here";
    Result own = run(base + " --cpu-matmul own");
    setenv("MOESERVE_CPU_MATMUL", "onednn", 1);
    Result onednn = run(base);
    unsetenv("MOESERVE_CPU_MATMUL");
    Result prefill = run(base + " --cpu-matmul onednn-prefill");
    ASSERT_EQ(prefill.exit_code, 0) << prefill.out;
    EXPECT_NE(prefill.out.find("over the packed panels from 64 rows, own AVX512-BF16 kernels below"), std::string::npos)
        << prefill.out;
    EXPECT_EQ(ids(own.out), ids(prefill.out)) << own.out << "\n" << prefill.out;
    ASSERT_EQ(own.exit_code, 0) << own.out;
    ASSERT_EQ(onednn.exit_code, 0) << onednn.out;
    EXPECT_NE(own.out.find("bf16 products: own AVX512-BF16 kernels (--cpu-matmul own)"), std::string::npos) << own.out;
    EXPECT_NE(onednn.out.find("bf16 products: oneDNN brg:"), std::string::npos) << onednn.out;
    EXPECT_NE(onednn.out.find("over the packed panels (--cpu-matmul onednn)"), std::string::npos) << onednn.out;
    EXPECT_EQ(ids(own.out).size(), 8u) << own.out;
    EXPECT_EQ(ids(own.out), ids(onednn.out)) << own.out << "\n" << onednn.out;
}

TEST(CliRun, ConfigWithoutWeightsSaysSo) {
    const auto dir = std::filesystem::temp_directory_path() / "moe_cli_no_weights";
    std::filesystem::create_directories(dir);
    std::filesystem::copy_file(fixture("qwen3_moe") + "/config.json", dir / "config.json",
                               std::filesystem::copy_options::overwrite_existing);
    Result r = run("run --model " + dir.string() + " --prompt-ids 1,2");
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.out.find("safetensors"), std::string::npos) << r.out;
    std::filesystem::remove_all(dir);
}

TEST(CliInfo, EverySharedConfigParsesAndUnsupportedFamiliesSaySo) {
    const std::string configs = std::string(MOE_TEST_DATA_DIR) + "/configs";
    ASSERT_TRUE(std::filesystem::exists(configs)) << configs;
    int seen = 0;
    for (const auto& e : std::filesystem::directory_iterator(configs)) {
        if (!std::filesystem::exists(e.path() / "config.json")) continue;
        Result r = run("info --model " + e.path().string());
        EXPECT_EQ(r.exit_code, 0) << e.path() << ": " << r.out;
        EXPECT_NE(r.out.find("parameters"), std::string::npos) << r.out;
        const bool supported = r.out.find("supported      yes") != std::string::npos;
        if (!supported) EXPECT_NE(r.out.find("not implemented yet"), std::string::npos) << r.out;
        if (e.path().filename() == "deepseek-v3") {
            // The published FP8 checkpoint: served as stored; sized (MLA counted as MLA), its FP8
            // bytes, its latent KV cache, MTP.
            EXPECT_TRUE(supported) << r.out;
            EXPECT_NE(r.out.find("fp8 weights    "), std::string::npos) << r.out;
            EXPECT_NE(r.out.find("blocks [128, 128]"), std::string::npos) << r.out;
            EXPECT_NE(r.out.find("(1 byte/weight)"), std::string::npos) << r.out;
            EXPECT_NE(r.out.find("kv_b_proj expanded to bf16 at load for MLA weight absorption"), std::string::npos)
                << r.out;
            EXPECT_NE(r.out.find("671.03 B total, 37.55 B active"), std::string::npos) << r.out;
            EXPECT_NE(r.out.find("70272 B/token at bf16 (latent 576 per layer)"), std::string::npos) << r.out;
            EXPECT_NE(r.out.find("1 next-token-prediction layer(s) in the checkpoint: recognised, not loaded"),
                      std::string::npos)
                << r.out;
        }
        if (e.path().filename() == "gpt-oss-20b" || e.path().filename() == "gpt-oss-120b") {
            // The published MXFP4 checkpoints: sized per layer type and in MXFP4, served with the
            // experts kept as MXFP4 (#24).
            const bool big = e.path().filename() == "gpt-oss-120b";
            EXPECT_TRUE(supported) << r.out;
            EXPECT_NE(r.out.find("mxfp4          experts"), std::string::npos) << r.out;
            EXPECT_NE(r.out.find(big ? "116.83 B total" : "20.91 B total"), std::string::npos) << r.out;
            EXPECT_NE(
                r.out.find(big ? "18 sliding_attention (window 128), 18 full_attention; KV 2048 B/token per layer"
                               : "12 sliding_attention (window 128), 12 full_attention; KV 2048 B/token per layer"),
                std::string::npos)
                << r.out;
            EXPECT_NE(r.out.find("at 4.25 bits/weight"), std::string::npos) << r.out;
            // 20b: the published index's total_size is 13,761,264,768 bytes.
            if (!big) EXPECT_NE(r.out.find("checkpoint with the rest in bf16 13.76 GB"), std::string::npos) << r.out;
        }
        if (e.path().filename() == "mixtral-8x7b") {
            EXPECT_TRUE(supported);
            EXPECT_NE(r.out.find("46.70 B total, 12.88 B active"), std::string::npos) << r.out;
            EXPECT_NE(r.out.find("weights absent"), std::string::npos) << r.out;
        }
        ++seen;
    }
    EXPECT_GE(seen, 7);
}

// The other two published MLA configs (issue 20): DeepSeek-R1 (V3's shapes, one MTP layer) and
// Kimi K2 (384 experts in one group, 64 heads, no MTP layer): parameters, the FP8 bytes, the latent
// KV cache, MTP recognised and not loaded, in the text and the JSON forms. The active counts were checked by
// hand: V3/R1 61 x 187.1 M of MLA + 3 dense MLPs 1.19 B + 58 x (8 routed + 1 shared experts +
// router) 23.1 B + embedding and lm_head 1.85 B = 37.55 B; K2 (64 heads) 6.17 + 0.40 + 60 x 399.1 M
// + 2.35 = 32.86 B; both as published (37 B, 32 B activated).
TEST(CliInfo, DeepseekR1AndKimiK2AreSizedWithTheirLatentCacheAndMtp) {
    const std::string configs = std::string(MOE_TEST_DATA_DIR) + "/configs/";
    struct Want {
        const char* dir;
        const char* params;
        int64_t total, active;
        int mtp;
        const char* fp8;
    };
    for (const Want& w : {Want{"deepseek-r1", "671.03 B total, 37.55 B active", 671026419200, 37552297472, 1,
                               "fp8 weights    45032 matrices in e4m3, blocks [128, 128]: 669.07 GB (1 byte/weight)"},
                          Want{"kimi-k2", "1.03 T total, 32.86 B active", 1026408232448, 32861500928, 0,
                               "fp8 weights    69608 matrices in e4m3, blocks [128, 128]: 1.02 TB (1 byte/weight)"}}) {
        SCOPED_TRACE(w.dir);
        Result r = run("info --model " + configs + w.dir);
        ASSERT_EQ(r.exit_code, 0) << r.out;
        EXPECT_NE(r.out.find(w.params), std::string::npos) << r.out;
        EXPECT_NE(r.out.find("70272 B/token at bf16 (latent 576 per layer)"), std::string::npos) << r.out;
        EXPECT_NE(r.out.find("kv_lora_rank 512, qk 128 nope + 64 rope, v 128"), std::string::npos) << r.out;
        const bool mtp_line =
            r.out.find("1 next-token-prediction layer(s) in the checkpoint: recognised, not loaded") !=
            std::string::npos;
        EXPECT_EQ(mtp_line, w.mtp == 1) << r.out;
        EXPECT_NE(r.out.find(w.fp8), std::string::npos) << r.out;
        r = run("info --model " + configs + w.dir + " --json");
        ASSERT_EQ(r.exit_code, 0) << r.out;
        const auto j = nlohmann::json::parse(r.out.substr(r.out.find('{')));
        EXPECT_EQ(j["total_params"].get<int64_t>(), w.total);
        EXPECT_EQ(j["active_params_per_token"].get<int64_t>(), w.active);
        EXPECT_EQ(j["kv_bytes_per_token_bf16"].get<int64_t>(), 70272);
        EXPECT_EQ(j["num_nextn_predict_layers"].get<int>(), w.mtp);
    }
}

// The FP8 fixture (tests/reference/make_fp8_fixture.py): its e4m3 tensors and their scales are
// checked against config.json and the block size; --json gives the FP8 bytes.
TEST(CliInfo, Fp8FixtureIsCheckedAndSized) {
    const std::string dir = std::string(MOE_SOURCE_DIR) + "/tests/reference/fixtures_fp8/deepseek_v3_fp8";
    Result r = run("info --model " + dir);
    EXPECT_EQ(r.exit_code, 0) << r.out;
    EXPECT_NE(r.out.find("supported      yes"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("every tensor matches config.json"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("fp8 weights    72 matrices in e4m3, blocks [128, 128]"), std::string::npos) << r.out;
    r = run("info --model " + dir + " --json");
    EXPECT_EQ(r.exit_code, 0) << r.out;
    EXPECT_NE(r.out.find("\"fp8_matrices\": 72"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("\"fp8_weight_bytes\": "), std::string::npos) << r.out;
}

TEST(CliInfo, FixtureWithWeightsIsCheckedAndBrokenConfigFails) {
    Result r = run("info --model " + fixture("qwen2_moe"));
    EXPECT_EQ(r.exit_code, 0) << r.out;
    EXPECT_NE(r.out.find("every tensor matches config.json"), std::string::npos) << r.out;
    r = run("info --model " + fixture("qwen2_moe") + " --json");
    EXPECT_EQ(r.exit_code, 0) << r.out;
    const auto dir = std::filesystem::temp_directory_path() / "moe_cli_broken_config";
    std::filesystem::create_directories(dir);
    std::ofstream(dir / "config.json") << R"({"architectures": ["MixtralForCausalLM"], "vocab_size": 100,
        "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_local_experts": 2,
        "num_experts_per_tok": 3, "intermediate_size": 32})";
    r = run("info --model " + dir.string());
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.out.find("num_experts_per_tok"), std::string::npos) << r.out;
    std::filesystem::remove_all(dir);
}

}  // namespace
