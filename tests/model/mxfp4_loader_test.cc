// gpt-oss MXFP4 experts from a checkpoint (#24), end to end below the model: the fixture written by
// tests/reference/quantize_mxfp4.py (a tiny GptOssForCausalLM whose experts are stored as the
// published *_blocks / *_scales) is read by WeightLoader::mxfp4_expert into CPU MXFP4 weights;
// their values (recovered through the gemm op) equal transformers' own dequantization of the same
// files split into gate and up as modeling_gpt_oss splits them (experts_dequantized.safetensors);
// moe_experts over them matches the reference op on those weights; they hold 4.25 bits per weight;
// config.json's quantization_config is parsed; bad tensors are refused by name.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/safetensors.h"
#include "model/weight_loader.h"
#include "moe/cpu_backend.h"
#include "ops/ops.h"

namespace moe {
namespace {

std::filesystem::path fixture_dir() {
    return std::filesystem::path(MOE_SOURCE_DIR) / "tests/reference/fixtures_quant/gpt_oss_mxfp4";
}

// A WeightSource over one safetensors file, or over tensors a test made (which win).
class FileSource final : public WeightSource {
public:
    explicit FileSource(const SafetensorsFile* file) : file_(file) {}
    StatusOr<WeightRef> get(const std::string& name) const override {
        if (auto it = extra_.find(name); it != extra_.end()) return it->second;
        auto it = file_->tensors().find(name);
        if (it == file_->tensors().end()) return not_found("tensor " + name + " not in the file");
        const TensorInfo& t = it->second;
        return WeightRef{t.name, t.dtype, t.shape, t.data, t.file};
    }
    bool has(const std::string& name) const override {
        return extra_.count(name) != 0 || file_->tensors().count(name) != 0;
    }
    std::string describe() const override { return "test source"; }
    void add(const std::string& name, DType dtype, std::vector<int64_t> shape, const void* data) {
        extra_[name] = WeightRef{name, dtype, std::move(shape), data, "test"};
    }

private:
    const SafetensorsFile* file_;
    std::map<std::string, WeightRef> extra_;
};

struct Loaded {
    std::unique_ptr<SafetensorsFile> model, dequantized;
    ModelConfig config;
};

Loaded open_fixture() {
    Loaded l;
    auto m = SafetensorsFile::open(fixture_dir() / "model.safetensors");
    EXPECT_TRUE(m.ok()) << m.status().to_string();
    auto d = SafetensorsFile::open(fixture_dir() / "experts_dequantized.safetensors");
    EXPECT_TRUE(d.ok()) << d.status().to_string();
    auto c = load_model_config(fixture_dir());
    EXPECT_TRUE(c.ok()) << c.status().to_string();
    if (m.ok()) l.model = std::move(m).value();
    if (d.ok()) l.dequantized = std::move(d).value();
    if (c.ok()) l.config = std::move(c).value();
    return l;
}

// The [n, k] matrix behind a prepared weight, through the gemm op: x = the k x k identity, so
// y[i][c] = w[c][i] with one nonzero product per sum (exact).
std::vector<float> matrix_of(Backend& be, const WeightView& w) {
    const int64_t n = w.dim(0), k = w.dim(1);
    std::vector<float> eye(static_cast<size_t>(k * k), 0.0f), y(static_cast<size_t>(k * n), NAN);
    for (int64_t i = 0; i < k; ++i) eye[static_cast<size_t>(i * k + i)] = 1.0f;
    GemmArgs a{TensorView::make(eye.data(), DType::kF32, {k, k}), w, TensorView{},
               TensorView::make(y.data(), DType::kF32, {k, n}), false};
    const Status s = ops::run(be, a);
    EXPECT_TRUE(s.ok()) << s.to_string();
    std::vector<float> out(static_cast<size_t>(n * k));
    for (int64_t c = 0; c < n; ++c)
        for (int64_t i = 0; i < k; ++i) out[static_cast<size_t>(c * k + i)] = y[static_cast<size_t>(i * n + c)];
    return out;
}

std::vector<float> slice(const SafetensorsFile& f, const std::string& name, int64_t e) {
    const TensorInfo& t = f.tensors().at(name);
    const int64_t per = t.shape[1] * t.shape[2];
    const auto* p = static_cast<const float*>(t.data) + e * per;
    return std::vector<float>(p, p + per);
}

TEST(Mxfp4Checkpoint, ConfigSaysMxfp4) {
    Loaded l = open_fixture();
    EXPECT_EQ(l.config.family, ModelFamily::kGptOss);
    EXPECT_TRUE(l.config.quantization.mxfp4());
    EXPECT_EQ(l.config.quantization.modules_to_not_convert.size(), 4u);
}

TEST(Mxfp4Checkpoint, OtherQuantMethodsAndBadFieldsAreRefusedByName) {
    nlohmann::json j = nlohmann::json::parse(R"({"architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss",
        "vocab_size": 320, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "num_local_experts": 4,
        "num_experts_per_tok": 2})");
    j["quantization_config"] = {{"quant_method", "bitsandbytes"}};
    auto c = parse_model_config(j, "config.json");
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    EXPECT_FALSE(c->supported);
    EXPECT_NE(c->unsupported_reason.find("bitsandbytes"), std::string::npos) << c->unsupported_reason;
    j["quantization_config"] = {{"quant_method", "mxfp4"}, {"modules_to_not_convert", {1, 2}}};
    c = parse_model_config(j, "config.json");
    ASSERT_FALSE(c.ok());
    EXPECT_NE(c.status().message().find("modules_to_not_convert"), std::string::npos) << c.status().message();
    j["quantization_config"] = "mxfp4";
    c = parse_model_config(j, "config.json");
    ASSERT_FALSE(c.ok());
    EXPECT_NE(c.status().message().find("quantization_config must be an object"), std::string::npos);
}

// Every expert of layer 0: gate (rows 0::2 of gate_up), up (rows 1::2) and down hold, bit for
// bit, what transformers' dequantizer makes of the same tensors; moe_experts over them matches
// the reference; the backend holds 4.25 bits per weight.
TEST(Mxfp4Checkpoint, LoaderGivesTransformersWeightsAndExpertsMatch) {
    Loaded l = open_fixture();
    ASSERT_TRUE(l.model && l.dequantized);
    const int64_t E = l.config.num_experts, H = l.config.hidden_size, I = l.config.moe_intermediate_size;
    auto be = make_cpu_backend({.num_threads = 2});
    FileSource src(l.model.get());
    std::vector<DeviceBuffer> owned;
    std::vector<std::unique_ptr<PreparedWeight>> prepared;
    WeightLoader loader(src, *be, owned, prepared);
    const std::string pre = "model.layers.0.mlp.experts.";
    std::vector<WeightView> gate, up, down;
    for (int64_t e = 0; e < E; ++e) {
        auto gu = loader.mxfp4_expert(pre + "gate_up_proj", E, 2 * I, H, e, {{0, 2, I}, {1, 2, I}});
        ASSERT_TRUE(gu.ok()) << gu.status().to_string();
        auto dn = loader.mxfp4_expert(pre + "down_proj", E, H, I, e, {{0, 1, H}});
        ASSERT_TRUE(dn.ok()) << dn.status().to_string();
        gate.push_back((*gu)[0]);
        up.push_back((*gu)[1]);
        down.push_back((*dn)[0]);
        EXPECT_EQ(matrix_of(*be, gate.back()), slice(*l.dequantized, "layers.0.gate", e)) << "gate of expert " << e;
        EXPECT_EQ(matrix_of(*be, up.back()), slice(*l.dequantized, "layers.0.up", e)) << "up of expert " << e;
        EXPECT_EQ(matrix_of(*be, down.back()), slice(*l.dequantized, "layers.0.down", e)) << "down of expert " << e;
    }
    size_t bytes = 0;
    for (const auto& p : prepared) bytes += p->bytes();
    EXPECT_DOUBLE_EQ(8.0 * static_cast<double>(bytes) / static_cast<double>(E * 3 * H * I), 4.25);
    EXPECT_NE(be->weight_summary().find(std::to_string(3 * E) + " in MXFP4"), std::string::npos)
        << be->weight_summary();

    // moe_experts (the plain SwiGLU op; gpt-oss's clamped variant and biases are the model's) on
    // the MXFP4 experts against the reference op on transformers' dequantized weights.
    const std::vector<int32_t> offsets = {0, 1, 6, 6, 20};
    const int64_t rows = offsets.back();
    std::vector<float> x(static_cast<size_t>(rows * H));
    for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * static_cast<float>(i)) * 0.8f;
    std::vector<std::vector<float>> wf[3];
    std::vector<WeightView> ref_w[3];
    const char* names[3] = {"layers.0.gate", "layers.0.up", "layers.0.down"};
    for (int m = 0; m < 3; ++m) {
        for (int64_t e = 0; e < E; ++e) wf[m].push_back(slice(*l.dequantized, names[m], e));
        for (int64_t e = 0; e < E; ++e)
            ref_w[m].push_back(
                TensorView::make(wf[m][static_cast<size_t>(e)].data(), DType::kF32,
                                 m == 2 ? std::initializer_list<int64_t>{H, I} : std::initializer_list<int64_t>{I, H}));
    }
    std::vector<float> ref(static_cast<size_t>(rows * H)), got(static_cast<size_t>(rows * H));
    std::vector<int32_t> off = offsets;
    ASSERT_TRUE(ref::moe_experts({TensorView::make(x.data(), DType::kF32, {rows, H}),
                                  TensorView::make(off.data(), DType::kI32, {E + 1}), ref_w[0], ref_w[1], ref_w[2],
                                  TensorView::make(ref.data(), DType::kF32, {rows, H})})
                    .ok());
    const Status s = ops::run(*be, MoeExpertsArgs{TensorView::make(x.data(), DType::kF32, {rows, H}),
                                                  TensorView::make(off.data(), DType::kI32, {E + 1}), gate, up, down,
                                                  TensorView::make(got.data(), DType::kF32, {rows, H})});
    ASSERT_TRUE(s.ok()) << s.to_string();
    double sq = 0;
    for (float v : ref) sq += static_cast<double>(v) * v;
    const double rms = std::sqrt(sq / static_cast<double>(ref.size()));
    // x and the activations are rounded to bf16 before the products (as with bf16 weights): each
    // output's error is a sum of ~I + H rounding errors of 2^-9 relative, bounded here by 4% of
    // the outputs' rms (observed: up to 1.1%).
    for (size_t i = 0; i < ref.size(); ++i)
        ASSERT_NEAR(got[i], ref[i], 4e-2 * rms + 1e-2 * std::fabs(ref[i])) << "element " << i << ", rms " << rms;
}

// A blocks tensor of the wrong shape or dtype, a row selection past the tensor, an expert out of
// range and a NaN scale are errors naming the tensor.
TEST(Mxfp4Checkpoint, BadTensorsAreRefusedByName) {
    Loaded l = open_fixture();
    ASSERT_TRUE(l.model);
    const int64_t E = l.config.num_experts, H = l.config.hidden_size, I = l.config.moe_intermediate_size;
    auto be = make_cpu_backend({.num_threads = 1});
    std::vector<DeviceBuffer> owned;
    std::vector<std::unique_ptr<PreparedWeight>> prepared;
    const std::string gu = "model.layers.0.mlp.experts.gate_up_proj";
    {
        FileSource src(l.model.get());
        WeightLoader loader(src, *be, owned, prepared);
        // config.json says one more expert than the file holds
        auto r = loader.mxfp4_expert(gu, E + 1, 2 * I, H, 0, {{0, 2, I}});
        ASSERT_FALSE(r.ok());
        EXPECT_NE(r.status().message().find(gu + "_blocks"), std::string::npos) << r.status().message();
        r = loader.mxfp4_expert(gu, E, 2 * I, H, 0, {{1, 2, I + 1}});
        ASSERT_FALSE(r.ok());
        EXPECT_NE(r.status().message().find("row selection"), std::string::npos) << r.status().message();
        r = loader.mxfp4_expert(gu, E, 2 * I, H, E, {{0, 2, I}});
        ASSERT_FALSE(r.ok());
        r = loader.mxfp4_expert(gu, E, 2 * I, H + 1, 0, {{0, 2, I}});
        ASSERT_FALSE(r.ok());
        EXPECT_NE(r.status().message().find("multiple of 32"), std::string::npos) << r.status().message();
    }
    {
        // scales as f32: wrong dtype
        std::vector<float> scales(static_cast<size_t>(E * 2 * I * (H / 32)), 1.0f);
        FileSource src(l.model.get());
        src.add(gu + "_scales", DType::kF32, {E, 2 * I, H / 32}, scales.data());
        WeightLoader loader(src, *be, owned, prepared);
        auto r = loader.mxfp4_expert(gu, E, 2 * I, H, 0, {{0, 2, I}});
        ASSERT_FALSE(r.ok());
        EXPECT_NE(r.status().message().find(gu + "_scales"), std::string::npos) << r.status().message();
    }
    {
        // e8m0 0xff (NaN) in expert 1's row 3: refused when expert 1 is loaded, naming it
        const TensorInfo& t = l.model->tensors().at(gu + "_scales");
        std::vector<uint8_t> scales(static_cast<const uint8_t*>(t.data),
                                    static_cast<const uint8_t*>(t.data) + t.nbytes);
        scales[static_cast<size_t>((1 * 2 * I + 3) * (H / 32))] = 0xff;
        FileSource src(l.model.get());
        src.add(gu + "_scales", DType::kU8, t.shape, scales.data());
        WeightLoader loader(src, *be, owned, prepared);
        ASSERT_TRUE(loader.mxfp4_expert(gu, E, 2 * I, H, 0, {{0, 2, I}, {1, 2, I}}).ok());
        auto r = loader.mxfp4_expert(gu, E, 2 * I, H, 1, {{0, 2, I}, {1, 2, I}});
        ASSERT_FALSE(r.ok());
        EXPECT_NE(r.status().message().find("gate_up_proj[1] rows 1::2"), std::string::npos) << r.status().message();
        EXPECT_NE(r.status().message().find("NaN"), std::string::npos) << r.status().message();
    }
}

}  // namespace
}  // namespace moe
