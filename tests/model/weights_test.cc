// WeightStore (single file and sharded index) and check_weights against a config.
#include "model/weights.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "model/config.h"
#include "model/expected_tensors.h"
#include "model/test_files.h"
#include "moe/check.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using testing::ScratchDir;
using testing::TestTensor;
using testing::write_raw;
using testing::write_safetensors;

void write_text(const fs::path& p, const std::string& s) {
    std::ofstream(p, std::ios::binary) << s;
}

void expect_error(const Status& s, StatusCode code, std::initializer_list<std::string> needles) {
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), code) << s.to_string();
    for (const auto& n : needles)
        EXPECT_NE(s.message().find(n), std::string::npos) << "missing '" << n << "' in: " << s.message();
}

TEST(WeightStore, SingleFile) {
    ScratchDir dir;
    write_safetensors(dir / "model.safetensors", {{"a", "F32", {2, 2}, ""}, {"b", "BF16", {3}, "abcdef"}});
    auto w = WeightStore::open(dir.path());
    ASSERT_TRUE(w.ok()) << w.status().to_string();
    EXPECT_EQ(w->names(), std::vector<std::string>({"a", "b"}));
    EXPECT_EQ(w->total_bytes(), 16u + 6u);
    auto b = w->get("b");
    ASSERT_TRUE(b.ok());
    EXPECT_EQ(std::string(static_cast<const char*>(b->data), b->nbytes), "abcdef");
    EXPECT_TRUE(w->expect("a", {2, 2}).ok());
    expect_error(w->get("c").status(), StatusCode::kNotFound, {"tensor c", dir.path().string()});
    expect_error(w->expect("a", {4, 1}), StatusCode::kInvalidArgument,
                 {"tensor a in model.safetensors: shape [2, 2], expected [4, 1] from config.json"});
}

TEST(WeightStore, ShardedGoodPath) {
    ScratchDir dir;
    write_safetensors(dir / "model-00001-of-00002.safetensors", {{"x", "F32", {2}, "12345678"}});
    write_safetensors(dir / "model-00002-of-00002.safetensors", {{"y", "F16", {1}, "zz"}, {"z", "U8", {3}, "qrs"}});
    write_text(dir / "model.safetensors.index.json",
               R"({"metadata": {"total_size": 13}, "weight_map": {"x": "model-00001-of-00002.safetensors",
                   "y": "model-00002-of-00002.safetensors", "z": "model-00002-of-00002.safetensors"}})");
    auto w = WeightStore::open(dir.path());
    ASSERT_TRUE(w.ok()) << w.status().to_string();
    EXPECT_EQ(w->num_files(), 2u);
    EXPECT_EQ(w->names(), std::vector<std::string>({"x", "y", "z"}));
    EXPECT_EQ(w->total_bytes(), 13u);
    auto z = w->get("z");
    ASSERT_TRUE(z.ok());
    EXPECT_EQ(std::string(static_cast<const char*>(z->data), z->nbytes), "qrs");
    EXPECT_EQ(fs::path(z->file).filename(), "model-00002-of-00002.safetensors");
    // The store stays valid after a move (tensor pointers point into mappings it owns).
    WeightStore moved = std::move(*w);
    EXPECT_EQ(std::string(static_cast<const char*>(moved.get("x")->data), 8), "12345678");
}

TEST(WeightStore, WeightsAbsent) {
    ScratchDir dir;
    EXPECT_FALSE(weights_present(dir.path()));
    expect_error(WeightStore::open(dir.path()).status(), StatusCode::kNotFound,
                 {"weights absent", "model.safetensors"});
}

TEST(WeightStore, IndexPathTraversalDotDot) {
    ScratchDir outer;
    fs::create_directories(outer / "model");
    const fs::path dir = outer / "model";
    write_safetensors(outer / "outside.safetensors", {{"x", "F32", {1}, ""}});  // exists: must still be refused
    write_text(dir / "model.safetensors.index.json", R"({"weight_map": {"x": "../outside.safetensors"}})");
    expect_error(WeightStore::open(dir).status(), StatusCode::kInvalidArgument,
                 {"model.safetensors.index.json", "../outside.safetensors", "path traversal"});
}

TEST(WeightStore, IndexPathTraversalAbsolute) {
    ScratchDir dir;
    write_safetensors(dir / "abs.safetensors", {{"x", "F32", {1}, ""}});
    const std::string abs = (dir / "abs.safetensors").string();
    write_text(dir / "model.safetensors.index.json", R"({"weight_map": {"x": ")" + abs + R"("}})");
    expect_error(WeightStore::open(dir.path()).status(), StatusCode::kInvalidArgument,
                 {"model.safetensors.index.json", abs, "path traversal"});
}

TEST(WeightStore, IndexPathTraversalSymlink) {
    ScratchDir outer;
    fs::create_directories(outer / "model");
    write_safetensors(outer / "secret.safetensors", {{"x", "F32", {1}, ""}});
    fs::create_symlink(outer / "secret.safetensors", outer / "model" / "link.safetensors");
    write_text(outer / "model" / "model.safetensors.index.json", R"({"weight_map": {"x": "link.safetensors"}})");
    expect_error(WeightStore::open(outer / "model").status(), StatusCode::kInvalidArgument,
                 {"link.safetensors", "path traversal"});
}

TEST(WeightStore, IndexNotJson) {
    ScratchDir dir;
    write_text(dir / "model.safetensors.index.json", R"({"weight_map": {"x": )");
    expect_error(WeightStore::open(dir.path()).status(), StatusCode::kInvalidArgument,
                 {"model.safetensors.index.json", "not valid JSON"});
    write_text(dir / "model.safetensors.index.json", R"({"weight_map": {"x": 3}})");
    expect_error(WeightStore::open(dir.path()).status(), StatusCode::kInvalidArgument,
                 {"model.safetensors.index.json", "weight_map entry x"});
    write_text(dir / "model.safetensors.index.json", R"({"metadata": {}})");
    expect_error(WeightStore::open(dir.path()).status(), StatusCode::kInvalidArgument,
                 {"model.safetensors.index.json", "weight_map"});
}

TEST(WeightStore, ShardMissing) {
    ScratchDir dir;
    write_text(dir / "model.safetensors.index.json", R"({"weight_map": {"x": "model-00001-of-00002.safetensors"}})");
    expect_error(WeightStore::open(dir.path()).status(), StatusCode::kNotFound,
                 {"model.safetensors.index.json", "model-00001-of-00002.safetensors", "missing"});
}

TEST(WeightStore, ShardLacksPromisedTensor) {
    ScratchDir dir;
    write_safetensors(dir / "s1.safetensors", {{"x", "F32", {1}, ""}});
    write_text(dir / "model.safetensors.index.json",
               R"({"weight_map": {"x": "s1.safetensors", "y": "s1.safetensors"}})");
    expect_error(WeightStore::open(dir.path()).status(), StatusCode::kInvalidArgument,
                 {"tensor y", "s1.safetensors", "does not hold it"});
}

TEST(WeightStore, BadShardReportsShardFile) {
    ScratchDir dir;
    write_raw(dir / "s1.safetensors", "not json", "");
    write_text(dir / "model.safetensors.index.json", R"({"weight_map": {"x": "s1.safetensors"}})");
    expect_error(WeightStore::open(dir.path()).status(), StatusCode::kInvalidArgument,
                 {(dir / "s1.safetensors").string(), "not valid JSON"});
}

// ---- check_weights against a tiny Mixtral-shaped config -------------------------------------

ModelConfig tiny_mixtral() {
    auto j = nlohmann::json::parse(R"({"architectures": ["MixtralForCausalLM"], "vocab_size": 16,
        "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
        "intermediate_size": 4, "num_local_experts": 4, "num_experts_per_tok": 2})");
    auto c = parse_model_config(j, "config.json");
    MOE_CHECK(c.ok());
    return *c;
}

std::vector<TestTensor> tensors_for(const ModelConfig& c) {
    std::vector<TestTensor> out;
    for (const auto& e : expected_tensors(c)) out.push_back({e.name, "BF16", e.shape, ""});
    return out;
}

TEST(CheckWeights, TinyMixtralGood) {
    const ModelConfig c = tiny_mixtral();
    const auto expected = expected_tensors(c);
    // embed + 2 x (2 norms + 4 attn + gate + 4 experts x 3) + norm + lm_head
    EXPECT_EQ(expected.size(), 1u + 2u * (2 + 4 + 1 + 12) + 2u);
    ScratchDir dir;
    write_safetensors(dir / "model.safetensors", tensors_for(c));
    auto w = WeightStore::open(dir.path());
    ASSERT_TRUE(w.ok()) << w.status().to_string();
    EXPECT_TRUE(check_weights(c, *w).ok()) << check_weights(c, *w).to_string();
    // The shapes follow the config, so the byte count is the parameter count in bf16.
    EXPECT_EQ(w->total_bytes(), static_cast<uint64_t>(c.total_params()) * 2);
}

TEST(CheckWeights, ShapeNotMatchingConfig) {
    const ModelConfig c = tiny_mixtral();
    auto tensors = tensors_for(c);
    for (auto& t : tensors)
        if (t.name == "model.layers.1.block_sparse_moe.gate.weight") t.shape = {8, 8};
    ScratchDir dir;
    write_safetensors(dir / "model-00001-of-00001.safetensors", tensors);
    write_text(dir / "model.safetensors.index.json", [&] {
        nlohmann::json idx;
        for (const auto& t : tensors) idx["weight_map"][t.name] = "model-00001-of-00001.safetensors";
        return idx.dump();
    }());
    auto w = WeightStore::open(dir.path());
    ASSERT_TRUE(w.ok()) << w.status().to_string();
    expect_error(check_weights(c, *w), StatusCode::kInvalidArgument,
                 {"tensor model.layers.1.block_sparse_moe.gate.weight in model-00001-of-00001.safetensors: "
                  "shape [8, 8], expected [4, 8] from config.json"});
}

TEST(CheckWeights, MissingTensor) {
    const ModelConfig c = tiny_mixtral();
    auto tensors = tensors_for(c);
    std::erase_if(tensors,
                  [](const TestTensor& t) { return t.name == "model.layers.0.block_sparse_moe.experts.3.w2.weight"; });
    ScratchDir dir;
    write_safetensors(dir / "model.safetensors", tensors);
    auto w = WeightStore::open(dir.path());
    ASSERT_TRUE(w.ok()) << w.status().to_string();
    expect_error(check_weights(c, *w), StatusCode::kNotFound,
                 {"model.layers.0.block_sparse_moe.experts.3.w2.weight", dir.path().string()});
}

TEST(CheckWeights, WrongDtype) {
    const ModelConfig c = tiny_mixtral();
    auto tensors = tensors_for(c);
    tensors.back().dtype = "I32";  // lm_head
    ScratchDir dir;
    write_safetensors(dir / "model.safetensors", tensors);
    auto w = WeightStore::open(dir.path());
    ASSERT_TRUE(w.ok()) << w.status().to_string();
    expect_error(check_weights(c, *w), StatusCode::kInvalidArgument, {"lm_head.weight", "dtype i32"});
}

TEST(CheckWeights, UnsupportedFamilyRefused) {
    // (DeepSeek-V3 served this purpose until its FP8 checkpoints were served, #20.)
    auto c = load_model_config(fs::path(MOE_TEST_DATA_DIR) / "configs" / "glm-4.5");
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    EXPECT_TRUE(expected_tensors(*c).empty());
    ScratchDir dir;
    write_safetensors(dir / "model.safetensors", {{"x", "F32", {1}, ""}});
    auto w = WeightStore::open(dir.path());
    ASSERT_TRUE(w.ok());
    expect_error(check_weights(*c, *w), StatusCode::kUnimplemented, {"Glm4MoeForCausalLM"});
}

TEST(CheckWeights, RealMixtralIndexNamesMatchExpected) {
    // The real Mixtral-8x7B weight map (shards absent) must list exactly the tensors we expect.
    const fs::path d = fs::path(MOE_TEST_DATA_DIR) / "configs" / "mixtral-8x7b";
    auto c = load_model_config(d);
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    std::ifstream in(d / "model.safetensors.index.json");
    ASSERT_TRUE(in.good()) << d / "model.safetensors.index.json";
    auto idx = nlohmann::json::parse(in);
    std::set<std::string> listed;
    for (const auto& [name, shard] : idx["weight_map"].items()) listed.insert(name);
    std::set<std::string> expected;
    for (const auto& e : expected_tensors(*c)) expected.insert(e.name);
    EXPECT_EQ(listed, expected);
}

}  // namespace
}  // namespace moe
