#include "model/expected_tensors.h"

#include <filesystem>
#include <functional>

namespace moe {

namespace {

// Hands the expected tensors to `visit` one at a time, in checkpoint order, until it returns
// false. Memory stays constant however large config.json claims the model is (a config with
// every size at its limit implies ~12M tensors), and a check stops at the first mismatch.
class Emitter {
public:
    explicit Emitter(const std::function<bool(const ExpectedTensor&)>& visit) : visit_(visit) {}
    bool stopped() const { return stopped_; }
    void push_back(ExpectedTensor&& t) {
        if (!stopped_ && !visit_(t)) stopped_ = true;
    }

private:
    const std::function<bool(const ExpectedTensor&)>& visit_;
    bool stopped_ = false;
};

}  // namespace

void for_each_expected_tensor(const ModelConfig& c, const std::function<bool(const ExpectedTensor&)>& visit) {
    Emitter out(visit);
    if (!c.supported) return;
    const int64_t H = c.hidden_size, V = c.vocab_size, D = c.head_dim;
    const int64_t q_dim = c.num_heads * D, kv_dim = c.num_kv_heads * D;
    out.push_back({"model.embed_tokens.weight", {V, H}});
    for (int64_t i = 0; i < c.num_layers && !out.stopped(); ++i) {
        const std::string l = "model.layers." + std::to_string(i) + ".";
        out.push_back({l + "input_layernorm.weight", {H}});
        out.push_back({l + "post_attention_layernorm.weight", {H}});
        if (c.is_mla()) {
            const MlaConfig& m = c.mla;
            const int64_t nh = c.num_heads, qk = m.qk_nope_head_dim + m.qk_rope_head_dim;
            if (m.q_lora_rank > 0) {
                out.push_back({l + "self_attn.q_a_proj.weight", {m.q_lora_rank, H}});
                out.push_back({l + "self_attn.q_a_layernorm.weight", {m.q_lora_rank}});
                out.push_back({l + "self_attn.q_b_proj.weight", {nh * qk, m.q_lora_rank}});
            } else {
                out.push_back({l + "self_attn.q_proj.weight", {nh * qk, H}});
            }
            out.push_back({l + "self_attn.kv_a_proj_with_mqa.weight", {m.kv_lora_rank + m.qk_rope_head_dim, H}});
            out.push_back({l + "self_attn.kv_a_layernorm.weight", {m.kv_lora_rank}});
            out.push_back(
                {l + "self_attn.kv_b_proj.weight", {nh * (m.qk_nope_head_dim + m.v_head_dim), m.kv_lora_rank}});
            out.push_back({l + "self_attn.o_proj.weight", {H, nh * m.v_head_dim}});
        } else {
            out.push_back({l + "self_attn.q_proj.weight", {q_dim, H}});
            out.push_back({l + "self_attn.k_proj.weight", {kv_dim, H}});
            out.push_back({l + "self_attn.v_proj.weight", {kv_dim, H}});
            out.push_back({l + "self_attn.o_proj.weight", {H, q_dim}});
        }
        if (c.attention_bias) {
            out.push_back({l + "self_attn.q_proj.bias", {q_dim}});
            out.push_back({l + "self_attn.k_proj.bias", {kv_dim}});
            out.push_back({l + "self_attn.v_proj.bias", {kv_dim}});
        }
        if (c.gpt_oss.enabled) {
            out.push_back({l + "self_attn.o_proj.bias", {H}});
            out.push_back({l + "self_attn.sinks", {c.num_heads}});
        }
        if (c.qk_norm == QkNorm::kPerHead) {
            out.push_back({l + "self_attn.q_norm.weight", {D}});
            out.push_back({l + "self_attn.k_norm.weight", {D}});
        } else if (c.qk_norm == QkNorm::kFull) {
            out.push_back({l + "self_attn.q_norm.weight", {q_dim}});
            out.push_back({l + "self_attn.k_norm.weight", {kv_dim}});
        }
        const bool moe = static_cast<size_t>(i) < c.layer_is_moe.size() && c.layer_is_moe[i];
        const int64_t E = c.num_experts, I = c.moe_intermediate_size;
        if (moe && c.gpt_oss.enabled) {
            // Fused and interleaved as transformers' GptOssExperts (model/gpt_oss_experts.h).
            out.push_back({l + "mlp.router.weight", {E, H}});
            out.push_back({l + "mlp.router.bias", {E}});
            if (c.quantization.mxfp4()) {
                // MXFP4 as published: rows = output features, 32 values per block.
                out.push_back({l + "mlp.experts.gate_up_proj_blocks", {E, 2 * I, H / 32, 16}});
                out.push_back({l + "mlp.experts.gate_up_proj_scales", {E, 2 * I, H / 32}});
                out.push_back({l + "mlp.experts.down_proj_blocks", {E, H, I / 32, 16}});
                out.push_back({l + "mlp.experts.down_proj_scales", {E, H, I / 32}});
            } else {
                out.push_back({l + "mlp.experts.gate_up_proj", {E, H, 2 * I}});
                out.push_back({l + "mlp.experts.down_proj", {E, I, H}});
            }
            out.push_back({l + "mlp.experts.gate_up_proj_bias", {E, 2 * I}});
            out.push_back({l + "mlp.experts.down_proj_bias", {E, H}});
        } else if (moe && c.family == ModelFamily::kMixtral) {
            out.push_back({l + "block_sparse_moe.gate.weight", {E, H}});
            for (int64_t e = 0; e < E && !out.stopped(); ++e) {
                const std::string x = l + "block_sparse_moe.experts." + std::to_string(e) + ".";
                out.push_back({x + "w1.weight", {I, H}});  // gate
                out.push_back({x + "w2.weight", {H, I}});  // down
                out.push_back({x + "w3.weight", {I, H}});  // up
            }
        } else if (moe) {
            out.push_back({l + "mlp.gate.weight", {E, H}});
            if (c.group_routing.enabled) out.push_back({l + "mlp.gate.e_score_correction_bias", {E}});
            for (int64_t e = 0; e < E && !out.stopped(); ++e) {
                const std::string x = l + "mlp.experts." + std::to_string(e) + ".";
                out.push_back({x + "gate_proj.weight", {I, H}});
                out.push_back({x + "up_proj.weight", {I, H}});
                out.push_back({x + "down_proj.weight", {H, I}});
            }
            if (c.family == ModelFamily::kQwen2Moe && c.shared_expert_intermediate_size > 0) {
                const int64_t S = c.shared_expert_intermediate_size;
                out.push_back({l + "mlp.shared_expert.gate_proj.weight", {S, H}});
                out.push_back({l + "mlp.shared_expert.up_proj.weight", {S, H}});
                out.push_back({l + "mlp.shared_expert.down_proj.weight", {H, S}});
                out.push_back({l + "mlp.shared_expert_gate.weight", {1, H}});
            }
            if (c.family == ModelFamily::kDeepseekV3 && c.shared_expert_intermediate_size > 0) {
                const int64_t S = c.shared_expert_intermediate_size;  // no gate: always on
                out.push_back({l + "mlp.shared_experts.gate_proj.weight", {S, H}});
                out.push_back({l + "mlp.shared_experts.up_proj.weight", {S, H}});
                out.push_back({l + "mlp.shared_experts.down_proj.weight", {H, S}});
            }
        } else {
            const int64_t I = c.intermediate_size;
            out.push_back({l + "mlp.gate_proj.weight", {I, H}});
            out.push_back({l + "mlp.up_proj.weight", {I, H}});
            out.push_back({l + "mlp.down_proj.weight", {H, I}});
        }
    }
    out.push_back({"model.norm.weight", {H}});
    if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {V, H}});
}

std::vector<ExpectedTensor> expected_tensors(const ModelConfig& c) {
    std::vector<ExpectedTensor> out;
    for_each_expected_tensor(c, [&](const ExpectedTensor& t) {
        out.push_back(t);
        return true;
    });
    return out;
}

bool published_fp8_tensor(const std::string& name, const std::vector<int64_t>& shape) {
    const auto ends_with = [&](const char* suffix) {
        const std::string s(suffix);
        return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
    };
    return shape.size() == 2 && name.rfind("model.layers.", 0) == 0 && ends_with(".weight") &&
           !ends_with("norm.weight") && !ends_with(".mlp.gate.weight");
}

Fp8Footprint fp8_footprint(const ModelConfig& c) {
    Fp8Footprint f;
    if (!c.quantization.fp8) return f;
    const int64_t bn = c.quantization.block_n, bk = c.quantization.block_k;
    for_each_expected_tensor(c, [&](const ExpectedTensor& e) {
        if (!published_fp8_tensor(e.name, e.shape)) return true;
        const int64_t n = e.shape[0], k = e.shape[1];
        f.matrices += 1;
        f.weights += n * k;
        f.scale_bytes += ((n + bn - 1) / bn) * ((k + bk - 1) / bk) * 4;
        if (e.name.find(".self_attn.kv_b_proj.") != std::string::npos) f.expanded_weights += n * k;
        return true;
    });
    return f;
}

Status check_weights(const ModelConfig& c, const WeightStore& w) {
    if (!c.supported) return unimplemented(c.unsupported_reason);
    Status result;
    for_each_expected_tensor(c, [&](const ExpectedTensor& e) {
        StatusOr<TensorInfo> t = w.get_checked(e.name, e.shape);
        if (!t.ok()) {
            result = t.status();
            return false;
        }
        if (t->dtype == DType::kF8E4M3 && c.quantization.fp8) {
            // FP8: the block scales must be there, one per block (the loader checks it again).
            const int64_t n = e.shape.size() == 2 ? e.shape[0] : 0, k = e.shape.size() == 2 ? e.shape[1] : 0;
            const std::string scale_name = e.name + "_scale_inv";
            StatusOr<TensorInfo> s =
                w.get_checked(scale_name, {(n + c.quantization.block_n - 1) / c.quantization.block_n,
                                           (k + c.quantization.block_k - 1) / c.quantization.block_k});
            if (!s.ok()) {
                result = s.status();
                return false;
            }
            if (s->dtype != DType::kF32 && s->dtype != DType::kBF16) {
                result = invalid_argument("tensor " + scale_name + ": dtype " + dtype_name(s->dtype) +
                                          ", expected f32 block scales");
                return false;
            }
            return true;
        }
        if (t->dtype != DType::kF32 && t->dtype != DType::kBF16 && t->dtype != DType::kF16) {
            result = invalid_argument("tensor " + e.name + " in " + std::filesystem::path(t->file).filename().string() +
                                      ": dtype " + dtype_name(t->dtype) + ", expected f32, bf16 or f16");
            return false;
        }
        return true;
    });
    return result;
}

}  // namespace moe
