// ModelConfig: what the engine needs from a Hugging Face config.json, checked for sanity.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "moe/dtype.h"
#include "moe/status.h"

namespace moe {

enum class ModelFamily {
    kMixtral,     // MixtralForCausalLM
    kQwen3Moe,    // Qwen3MoeForCausalLM
    kQwen2Moe,    // Qwen2MoeForCausalLM
    kOlmoe,       // OlmoeForCausalLM
    kLlama,       // LlamaForCausalLM (dense)
    kQwen3,       // Qwen3ForCausalLM (dense)
    kDeepseekV3,  // DeepseekV3ForCausalLM / Kimi K2: parsed for `info`, not served yet
    kGptOss,      // GptOssForCausalLM (bf16/f32 checkpoints; MXFP4 experts: see unsupported_reason)
    kUnknown,     // any other architecture: parsed for `info` where the usual keys exist
};

const char* family_name(ModelFamily family);

enum class QkNorm {
    kNone,
    kPerHead,  // Qwen3: RMSNorm over each head's head_dim (weight [head_dim])
    kFull,     // OLMoE: RMSNorm over the whole q (k) projection (weight [num_heads * head_dim])
};

// Multi-head latent attention (DeepSeek-V2/V3, Kimi K2): q through an optional low-rank q_a/q_b
// pair, K and V from a kv_lora_rank latent plus one RoPE key shared by all heads. The KV cache
// stores the latent (after kv_a_layernorm) and the roped key: kv_lora_rank + qk_rope_head_dim
// values per token per layer. All zero for other families.
struct MlaConfig {
    int64_t q_lora_rank = 0;  // 0: q_proj straight from the hidden state ("q_lora_rank": null)
    int64_t kv_lora_rank = 0;
    int64_t qk_nope_head_dim = 0;
    int64_t qk_rope_head_dim = 0;
    int64_t v_head_dim = 0;
    bool rope_interleave = false;  // rope pairs (2i, 2i+1) instead of (i, i + rope/2)
};

// "rope_scaling": {"type": "yarn", ...} (the only scaling the MLA families use). Absent: none.
struct YarnScaling {
    bool enabled = false;
    double factor = 1.0;
    int64_t original_max_position_embeddings = 0;
    double beta_fast = 32.0;
    double beta_slow = 1.0;
    double mscale = 0.0;          // 0: absent
    double mscale_all_dim = 0.0;  // 0: absent
    // transformers' find_correction_range: floor/ceil the correction range (default true;
    // gpt-oss writes false and keeps the fractional bounds).
    bool truncate = true;
};

// gpt-oss (GptOssForCausalLM): learned attention sinks, an o_proj bias, a router with a bias,
// experts with biases and the clamped SwiGLU, gate and up interleaved in one fused tensor.
struct GptOssConfig {
    bool enabled = false;
    double swiglu_limit = 7.0;  // config "swiglu_limit" (transformers hard-codes 7.0)
    double swiglu_alpha = 1.702;
};

// DeepSeek-V3's router (topk_method "noaux_tc", scoring_func "sigmoid"): sigmoid scores, a
// per-expert bias for choosing only, num_groups groups of which topk_groups are kept.
struct GroupRouting {
    bool enabled = false;  // false: softmax top-k (every other family)
    int64_t num_groups = 1;
    int64_t topk_groups = 1;
    double routed_scaling_factor = 1.0;
};

// config.json quantization_config, as far as this build reads it (#24). gpt-oss: quant_method
// "mxfp4": the experts' gate_up_proj and down_proj are stored as *_blocks / *_scales (MXFP4,
// moe/quant.h); the modules in modules_to_not_convert (attention, router, embeddings, lm_head)
// and every bias stay bf16.
struct QuantizationConfig {
    std::string method;  // "" (none) or "mxfp4"
    std::vector<std::string> modules_to_not_convert;
    bool mxfp4() const { return method == "mxfp4"; }
};

struct ModelConfig {
    ModelFamily family = ModelFamily::kUnknown;
    std::string architecture;  // as written in config.json "architectures"[0]
    std::string model_type;    // config.json "model_type"

    int64_t vocab_size = 0;
    int64_t hidden_size = 0;
    int64_t num_layers = 0;
    int64_t num_heads = 0;
    int64_t num_kv_heads = 0;
    int64_t head_dim = 0;               // "head_dim" or hidden_size / num_heads
    int64_t intermediate_size = 0;      // dense MLP layers (0 if the model has none)
    int64_t moe_intermediate_size = 0;  // per expert (Mixtral: intermediate_size)
    int64_t num_experts = 0;            // 0 for dense models
    int64_t num_experts_per_tok = 0;
    bool norm_topk_prob = false;                  // renormalize the top-k weights (Mixtral: always true)
    int64_t shared_expert_intermediate_size = 0;  // Qwen2-MoE; 0 = no shared expert
    std::vector<bool> layer_is_moe;               // size num_layers (mlp_only_layers, decoder_sparse_step)

    bool attention_bias = false;  // bias on q/k/v projections (Qwen2-MoE: true)
    QkNorm qk_norm = QkNorm::kNone;
    float rms_norm_eps = 1e-6f;
    float rope_theta = 10000.0f;
    int64_t rotary_dim = 0;  // head_dim unless partial rotary
    int64_t max_position_embeddings = 0;
    int64_t sliding_window = 0;  // 0: none
    // Per layer, whether it is a sliding-window layer ("layer_types": sliding_attention vs
    // full_attention). Empty: every layer uses sliding_window (Mixtral, Qwen).
    std::vector<bool> layer_sliding;
    // The window of layer `l` (0: full attention).
    int64_t window_of(int64_t l) const {
        if (layer_sliding.empty()) return sliding_window;
        return layer_sliding[static_cast<size_t>(l)] ? sliding_window : 0;
    }
    bool tie_word_embeddings = false;

    MlaConfig mla;  // kv_lora_rank > 0 iff the model uses MLA
    YarnScaling yarn;
    GroupRouting group_routing;
    GptOssConfig gpt_oss;
    int64_t num_nextn_predict_layers = 0;  // MTP layers in the checkpoint: recognised, not loaded
    QuantizationConfig quantization;
    bool is_mla() const { return mla.kv_lora_rank > 0; }

    DType torch_dtype = DType::kBF16;  // "torch_dtype" / "dtype"; f32/bf16/f16
    int64_t bos_token_id = -1;
    std::vector<int64_t> eos_token_ids;  // config.json and generation_config.json, merged

    // Whether this build can run the model; if not, why ("DeepSeek-V3 MLA attention is not
    // implemented yet"). `info` prints it; loading for inference refuses it.
    bool supported = false;
    std::string unsupported_reason;

    // Parameter counts from the shapes above (embedding and lm_head included).
    int64_t total_params() const;
    int64_t active_params_per_token() const;
    // Elements of the routed experts' gate, up and down matrices (biases not included): what an
    // MXFP4 checkpoint (gpt-oss) stores as blocks of 32 e2m1 values with one e8m0 scale each.
    int64_t routed_expert_weights() const;
    // Sliding-window layers (0 when there is no window).
    int64_t num_sliding_layers() const;
};

// Parses and checks a config.json already read as JSON. `source` names the file in errors.
// Errors name the key and the limit: "config.json: num_experts_per_tok (9) > num_experts (8)".
StatusOr<ModelConfig> parse_model_config(const nlohmann::json& j, const std::string& source);

// Reads `dir`/config.json (and generation_config.json when present, for eos_token_id).
StatusOr<ModelConfig> load_model_config(const std::filesystem::path& dir);

}  // namespace moe
