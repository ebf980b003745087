#include "model/random_model.h"

#include <cmath>
#include <map>
#include <mutex>
#include <random>

namespace moe {

nlohmann::json random_model_config_json(const RandomModelShape& s) {
    nlohmann::json j;
    j["architectures"] = {s.architecture};
    j["model_type"] = "qwen3_moe";
    j["vocab_size"] = s.vocab_size;
    j["hidden_size"] = s.hidden_size;
    j["num_hidden_layers"] = s.num_layers;
    j["num_attention_heads"] = s.num_heads;
    j["num_key_value_heads"] = s.num_kv_heads;
    j["head_dim"] = s.head_dim;
    j["num_experts"] = s.num_experts;
    j["num_experts_per_tok"] = s.num_experts_per_tok;
    j["moe_intermediate_size"] = s.moe_intermediate_size;
    j["intermediate_size"] = s.intermediate_size;
    j["norm_topk_prob"] = true;
    j["decoder_sparse_step"] = 1;
    j["mlp_only_layers"] = nlohmann::json::array();
    j["rms_norm_eps"] = 1e-6;
    j["rope_theta"] = 1000000.0;
    j["max_position_embeddings"] = s.max_position_embeddings;
    j["tie_word_embeddings"] = false;
    j["torch_dtype"] = "bfloat16";
    j["bos_token_id"] = nullptr;
    j["eos_token_id"] = nullptr;
    return j;
}

namespace {

// Tensors are generated lazily so that a large benchmark model does not pay for a tensor
// twice; each one from its own seed (hash of the name) so the order of access does not matter.
class RandomSource final : public WeightSource {
public:
    RandomSource(const ModelConfig& c, uint64_t seed, DType dtype) : seed_(seed), dtype_(dtype) {
        const int64_t H = c.hidden_size, hd = c.head_dim;
        auto add = [&](const std::string& name, std::vector<int64_t> shape, float std_dev, float mean = 0.0f) {
            specs_[name] = {std::move(shape), std_dev, mean, {}};
        };
        const float wstd = 1.0f / std::sqrt(static_cast<float>(H));
        add("model.embed_tokens.weight", {c.vocab_size, H}, 1.0f);
        add("model.norm.weight", {H}, 0.05f, 1.0f);
        add("lm_head.weight", {c.vocab_size, H}, wstd);
        for (int64_t l = 0; l < c.num_layers; ++l) {
            const std::string p = "model.layers." + std::to_string(l) + ".";
            add(p + "input_layernorm.weight", {H}, 0.05f, 1.0f);
            add(p + "post_attention_layernorm.weight", {H}, 0.05f, 1.0f);
            add(p + "self_attn.q_proj.weight", {c.num_heads * hd, H}, wstd);
            add(p + "self_attn.k_proj.weight", {c.num_kv_heads * hd, H}, wstd);
            add(p + "self_attn.v_proj.weight", {c.num_kv_heads * hd, H}, wstd);
            add(p + "self_attn.o_proj.weight", {H, c.num_heads * hd},
                1.0f / std::sqrt(static_cast<float>(c.num_heads * hd)));
            add(p + "self_attn.q_norm.weight", {hd}, 0.05f, 1.0f);
            add(p + "self_attn.k_norm.weight", {hd}, 0.05f, 1.0f);
            if (c.layer_is_moe[static_cast<size_t>(l)]) {
                const int64_t I = c.moe_intermediate_size;
                add(p + "mlp.gate.weight", {c.num_experts, H}, 2.0f * wstd);
                for (int64_t e = 0; e < c.num_experts; ++e) {
                    const std::string ep = p + "mlp.experts." + std::to_string(e) + ".";
                    add(ep + "gate_proj.weight", {I, H}, wstd);
                    add(ep + "up_proj.weight", {I, H}, wstd);
                    add(ep + "down_proj.weight", {H, I}, 1.0f / std::sqrt(static_cast<float>(I)));
                }
            } else {
                const int64_t I = c.intermediate_size;
                add(p + "mlp.gate_proj.weight", {I, H}, wstd);
                add(p + "mlp.up_proj.weight", {I, H}, wstd);
                add(p + "mlp.down_proj.weight", {H, I}, 1.0f / std::sqrt(static_cast<float>(I)));
            }
        }
    }

    StatusOr<WeightRef> get(const std::string& name) const override {
        std::lock_guard<std::mutex> lock(mu_);
        auto it = specs_.find(name);
        if (it == specs_.end()) return not_found("tensor " + name + " not in the random model");
        Spec& spec = it->second;
        if (spec.data.empty()) {
            int64_t n = 1;
            for (int64_t d : spec.shape) n *= d;
            spec.data.resize(static_cast<size_t>(n) * dtype_size(dtype_));
            std::mt19937_64 rng(seed_ ^ std::hash<std::string>{}(name));
            std::normal_distribution<float> dist(spec.mean, spec.std_dev);
            std::vector<float> buf(static_cast<size_t>(n));
            for (auto& v : buf) v = dist(rng);
            convert_from_f32(buf.data(), spec.data.data(), dtype_, buf.size());
        }
        return WeightRef{
            .name = name, .dtype = dtype_, .shape = spec.shape, .data = spec.data.data(), .origin = "random model"};
    }
    bool has(const std::string& name) const override { return specs_.count(name) != 0; }
    std::string describe() const override { return "random model (seed " + std::to_string(seed_) + ")"; }

private:
    struct Spec {
        std::vector<int64_t> shape;
        float std_dev = 0;
        float mean = 0;
        std::vector<uint8_t> data;
    };
    uint64_t seed_;
    DType dtype_;
    mutable std::mutex mu_;
    mutable std::map<std::string, Spec> specs_;
};

}  // namespace

std::shared_ptr<const WeightSource> make_random_weights(const ModelConfig& config, uint64_t seed, DType dtype) {
    return std::make_shared<RandomSource>(config, seed, dtype);
}

}  // namespace moe
