// Parsing of Hugging Face config.json into ModelConfig.
//
// Defaults for absent keys follow the transformers config classes of each family (MixtralConfig,
// Qwen3MoeConfig, ...), except for the shape-defining keys (vocab_size, hidden_size,
// num_hidden_layers, num_attention_heads): a config without them is broken in practice, and
// silently serving a 7B-shaped default would be worse than refusing.
#include "model/config.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/json_limits.h"

namespace moe {

const char* family_name(ModelFamily family) {
    switch (family) {
        case ModelFamily::kMixtral:
            return "mixtral";
        case ModelFamily::kQwen3Moe:
            return "qwen3_moe";
        case ModelFamily::kQwen2Moe:
            return "qwen2_moe";
        case ModelFamily::kOlmoe:
            return "olmoe";
        case ModelFamily::kLlama:
            return "llama";
        case ModelFamily::kQwen3:
            return "qwen3";
        case ModelFamily::kDeepseekV3:
            return "deepseek_v3";
        case ModelFamily::kGptOss:
            return "gpt_oss";
        case ModelFamily::kUnknown:
            return "unknown";
    }
    return "unknown";
}

namespace {

using nlohmann::json;

constexpr int64_t kMaxVocab = int64_t{1} << 24;
constexpr int64_t kMaxHidden = 65536;
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxHeads = 1024;
constexpr int64_t kMaxExperts = 4096;
constexpr int64_t kMaxIntermediate = int64_t{1} << 20;
constexpr int64_t kMaxHeadDim = 4096;
constexpr int64_t kMaxPositions = int64_t{1} << 30;
constexpr int64_t kMaxTokenId = int64_t{1} << 31;
constexpr size_t kMaxConfigFileBytes = size_t{64} << 20;

std::string type_of(const json& v) {
    if (v.is_boolean()) return "boolean";
    if (v.is_number_integer()) return "integer";
    if (v.is_number_float()) return "number";
    if (v.is_string()) return "string";
    if (v.is_array()) return "array";
    if (v.is_object()) return "object";
    return "null";
}

// Reads typed keys from one JSON object; errors name the source file and the key. JSON null
// counts as absent because configs write `"sliding_window": null` to mean "not set".
class Reader {
public:
    Reader(const json& j, const std::string& source) : j_(j), source_(source) {}

    bool has(const std::string& key) const { return j_.contains(key) && !j_.at(key).is_null(); }

    Status error(const std::string& what) const { return invalid_argument(source_ + ": " + what); }

    // An integer in [lo, hi]; `fallback` when absent, or an error when there is none.
    StatusOr<int64_t> integer(const std::string& key, std::optional<int64_t> fallback, int64_t lo, int64_t hi) const {
        if (!has(key)) {
            if (!fallback) return error("missing required key " + key);
            return *fallback;
        }
        const json& v = j_.at(key);
        int64_t x = 0;
        if (v.is_number_integer()) {
            if (v.is_number_unsigned() &&
                v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
                return error(key + " (" + v.dump() + ") must be in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                             "]");
            x = v.get<int64_t>();
        } else if (v.is_number_float()) {
            // Some exporters write 32768.0; accept integral values only.
            double d = v.get<double>();
            if (!std::isfinite(d) || d != std::floor(d) || std::fabs(d) > 9.0e18)
                return error(key + " must be an integer, got " + v.dump());
            x = static_cast<int64_t>(d);
        } else {
            return error(key + " must be an integer, got " + type_of(v) + " " + v.dump());
        }
        if (x < lo || x > hi)
            return error(key + " (" + std::to_string(x) + ") must be in [" + std::to_string(lo) + ", " +
                         std::to_string(hi) + "]");
        return x;
    }

    StatusOr<double> number(const std::string& key, double fallback, double lo, double hi) const {
        if (!has(key)) return fallback;
        const json& v = j_.at(key);
        if (!v.is_number()) return error(key + " must be a number, got " + type_of(v) + " " + v.dump());
        double d = v.get<double>();
        if (!std::isfinite(d) || d < lo || d > hi) {
            std::ostringstream os;
            os << key << " (" << v.dump() << ") must be in [" << lo << ", " << hi << "]";
            return error(os.str());
        }
        return d;
    }

    StatusOr<bool> boolean(const std::string& key, bool fallback) const {
        if (!has(key)) return fallback;
        const json& v = j_.at(key);
        if (!v.is_boolean()) return error(key + " must be true or false, got " + type_of(v) + " " + v.dump());
        return v.get<bool>();
    }

    StatusOr<std::string> string(const std::string& key, const std::string& fallback) const {
        if (!has(key)) return fallback;
        const json& v = j_.at(key);
        if (!v.is_string()) return error(key + " must be a string, got " + type_of(v) + " " + v.dump());
        return v.get<std::string>();
    }

    // An int or a list of ints (eos_token_id).
    Status token_ids(const std::string& key, std::vector<int64_t>* out) const {
        if (!has(key)) return ok_status();
        const json& v = j_.at(key);
        auto one = [&](const json& x) -> Status {
            if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() >= kMaxTokenId)
                return error(key + " must hold non-negative integer token ids, got " + x.dump());
            int64_t id = x.get<int64_t>();
            if (std::find(out->begin(), out->end(), id) == out->end()) out->push_back(id);
            return ok_status();
        };
        if (v.is_array()) {
            for (const json& x : v) MOE_RETURN_IF_ERROR(one(x));
            return ok_status();
        }
        return one(v);
    }

private:
    const json& j_;
    std::string source_;  // a copy: readers are made for sub-objects with a built name (rope_scaling)
};

struct FamilyInfo {
    ModelFamily family;
    const char* reason;  // nullptr when supported
};

FamilyInfo family_of(const std::string& arch, const std::string& model_type) {
    if (arch == "MixtralForCausalLM" || (arch.empty() && model_type == "mixtral"))
        return {ModelFamily::kMixtral, nullptr};
    if (arch == "Qwen3MoeForCausalLM" || (arch.empty() && model_type == "qwen3_moe"))
        return {ModelFamily::kQwen3Moe, nullptr};
    if (arch == "Qwen2MoeForCausalLM" || (arch.empty() && model_type == "qwen2_moe"))
        return {ModelFamily::kQwen2Moe, nullptr};
    if (arch == "OlmoeForCausalLM" || (arch.empty() && model_type == "olmoe")) return {ModelFamily::kOlmoe, nullptr};
    if (arch == "LlamaForCausalLM" || (arch.empty() && model_type == "llama")) return {ModelFamily::kLlama, nullptr};
    if (arch == "Qwen3ForCausalLM" || (arch.empty() && model_type == "qwen3")) return {ModelFamily::kQwen3, nullptr};
    if (arch == "DeepseekV3ForCausalLM" || arch.rfind("KimiK2", 0) == 0 ||
        (arch.empty() && (model_type == "deepseek_v3" || model_type == "kimi_k2")))
        return {ModelFamily::kDeepseekV3, nullptr};  // FP8 checkpoints: refused in parse_deepseek_v3
    if (arch == "GptOssForCausalLM" || (arch.empty() && model_type == "gpt_oss"))
        return {ModelFamily::kGptOss, nullptr};  // MXFP4 checkpoints: refused in parse_gpt_oss
    if (arch == "DeepseekV2ForCausalLM" || (arch.empty() && model_type == "deepseek_v2"))
        return {ModelFamily::kUnknown, "MLA attention and group-limited routing are not implemented yet"};
    if (arch == "Glm4MoeForCausalLM" || (arch.empty() && model_type == "glm4_moe"))
        return {ModelFamily::kUnknown,
                "sigmoid group-limited routing with shared experts and partial rotary are not implemented yet"};
    return {ModelFamily::kUnknown, "this architecture is not one of the families moeserve implements"};
}

bool is_deepseek_like(const ModelConfig& c) {
    return c.family == ModelFamily::kDeepseekV3 || c.architecture == "DeepseekV2ForCausalLM" ||
           c.architecture == "Glm4MoeForCausalLM" || c.model_type == "deepseek_v2" || c.model_type == "glm4_moe";
}

// Per-family defaults for the keys transformers defaults (see the config classes).
struct Defaults {
    int64_t intermediate = 11008;
    int64_t moe_intermediate = 0;
    int64_t num_experts = 0;
    int64_t top_k = 0;
    double rms_eps = 1e-6;
    double rope_theta = 10000.0;
    int64_t max_pos = 2048;
    std::optional<int64_t> head_dim;  // nullopt: hidden_size / num_heads
};

Defaults defaults_for(ModelFamily f) {
    Defaults d;
    switch (f) {
        case ModelFamily::kMixtral:
            d = {14336, 14336, 8, 2, 1e-5, 1e6, 4096 * 32, std::nullopt};
            break;
        case ModelFamily::kQwen3Moe:
            d = {6144, 768, 128, 8, 1e-6, 10000.0, 32768, std::nullopt};
            break;
        case ModelFamily::kQwen2Moe:
            d = {5632, 1408, 60, 4, 1e-6, 10000.0, 32768, std::nullopt};
            break;
        case ModelFamily::kOlmoe:
            d = {2048, 2048, 64, 8, 1e-5, 10000.0, 4096, std::nullopt};
            break;
        case ModelFamily::kQwen3:
            d = {22016, 0, 0, 0, 1e-6, 10000.0, 32768, 128};
            break;
        case ModelFamily::kGptOss:  // GptOssConfig
            d = {2880, 2880, 128, 4, 1e-5, 150000.0, 131072, 64};
            break;
        default:
            break;
    }
    return d;
}

Status parse_rope(const json& j, const std::string& source, const Defaults& d, ModelConfig* c) {
    Reader r(j, source);
    double theta = d.rope_theta;
    bool found = false;
    if (r.has("rope_theta")) {
        MOE_ASSIGN_OR_RETURN(theta, r.number("rope_theta", d.rope_theta, 1.0, 1e12));
        found = true;
    }
    // Newer transformers move rope_theta into rope_parameters (older: rope_scaling).
    for (const char* nested : {"rope_parameters", "rope_scaling"}) {
        if (found || !r.has(nested)) continue;
        const json& sub = j.at(nested);
        if (!sub.is_object()) return r.error(std::string(nested) + " must be an object, got " + type_of(sub));
        Reader rs(sub, source);
        if (rs.has("rope_theta")) {
            MOE_ASSIGN_OR_RETURN(theta, rs.number("rope_theta", d.rope_theta, 1.0, 1e12));
            found = true;
        }
    }
    c->rope_theta = static_cast<float>(theta);
    return ok_status();
}

Status parse_experts(const Reader& r, const Defaults& d, ModelConfig* c) {
    const ModelFamily f = c->family;
    const bool moe_family = f == ModelFamily::kMixtral || f == ModelFamily::kQwen3Moe || f == ModelFamily::kQwen2Moe ||
                            f == ModelFamily::kOlmoe;
    if (f == ModelFamily::kLlama || f == ModelFamily::kQwen3) {
        MOE_ASSIGN_OR_RETURN(c->intermediate_size, r.integer("intermediate_size", d.intermediate, 1, kMaxIntermediate));
        c->layer_is_moe.assign(static_cast<size_t>(c->num_layers), false);  // dense: every layer an MLP
        return ok_status();
    }
    // Which key holds the expert count depends on the family; unknown families get the first found.
    std::optional<int64_t> dflt_e = moe_family ? std::optional<int64_t>(d.num_experts) : std::optional<int64_t>(0);
    std::string experts_key = "num_experts";
    if (f == ModelFamily::kMixtral || f == ModelFamily::kGptOss) {
        experts_key = "num_local_experts";
    } else if (is_deepseek_like(*c)) {
        experts_key = "n_routed_experts";
    } else if (!moe_family) {
        for (const char* k : {"num_experts", "num_local_experts", "n_routed_experts"})
            if (r.has(k)) {
                experts_key = k;
                break;
            }
    }
    MOE_ASSIGN_OR_RETURN(c->num_experts, r.integer(experts_key, dflt_e, 0, kMaxExperts));
    const std::string topk_key =
        (f == ModelFamily::kGptOss && !r.has("num_experts_per_tok")) ? "experts_per_token" : "num_experts_per_tok";
    MOE_ASSIGN_OR_RETURN(
        c->num_experts_per_tok,
        r.integer(topk_key,
                  c->num_experts > 0 ? std::optional<int64_t>(moe_family ? d.top_k : 1) : std::optional<int64_t>(0), 0,
                  kMaxExperts));
    if (c->num_experts > 0 && c->num_experts_per_tok < 1)
        return r.error(topk_key + " (" + std::to_string(c->num_experts_per_tok) +
                       ") must be >= 1 when there are experts");
    if (c->num_experts_per_tok > c->num_experts)
        return r.error(topk_key + " (" + std::to_string(c->num_experts_per_tok) + ") > " + experts_key + " (" +
                       std::to_string(c->num_experts) + ")");

    int64_t intermediate = 0;
    MOE_ASSIGN_OR_RETURN(intermediate, r.integer("intermediate_size", d.intermediate, 1, kMaxIntermediate));
    // Mixtral, OLMoE and gpt-oss size their experts with intermediate_size.
    const bool expert_uses_intermediate = f == ModelFamily::kMixtral || f == ModelFamily::kOlmoe ||
                                          f == ModelFamily::kGptOss ||
                                          (f == ModelFamily::kUnknown && !r.has("moe_intermediate_size"));
    if (expert_uses_intermediate) {
        c->moe_intermediate_size = c->num_experts > 0 ? intermediate : 0;
    } else {
        MOE_ASSIGN_OR_RETURN(
            c->moe_intermediate_size,
            r.integer("moe_intermediate_size", moe_family ? std::optional<int64_t>(d.moe_intermediate) : std::nullopt,
                      1, kMaxIntermediate));
    }

    c->layer_is_moe.assign(static_cast<size_t>(c->num_layers), false);
    if (f == ModelFamily::kQwen3Moe || f == ModelFamily::kQwen2Moe) {
        return ok_status();  // layer pattern and intermediate_size: parse_qwen_layers (needs the raw list)
    }
    if (is_deepseek_like(*c)) {
        int64_t first_dense = 0, freq = 1;
        MOE_ASSIGN_OR_RETURN(first_dense, r.integer("first_k_dense_replace", 0, 0, c->num_layers));
        MOE_ASSIGN_OR_RETURN(freq, r.integer("moe_layer_freq", 1, 1, kMaxLayers));
        for (int64_t i = 0; i < c->num_layers; ++i)
            c->layer_is_moe[i] = c->num_experts > 0 && i >= first_dense && i % freq == 0;
        int64_t n_shared = 0;
        MOE_ASSIGN_OR_RETURN(n_shared, r.integer("n_shared_experts", 0, 0, kMaxExperts));
        c->shared_expert_intermediate_size = n_shared * c->moe_intermediate_size;
    } else {
        for (int64_t i = 0; i < c->num_layers; ++i) c->layer_is_moe[i] = c->num_experts > 0;
    }
    const bool any_dense = std::find(c->layer_is_moe.begin(), c->layer_is_moe.end(), false) != c->layer_is_moe.end();
    c->intermediate_size = any_dense ? intermediate : 0;
    return ok_status();
}

// "rope_scaling": {"rope_type": "yarn", ...} or "default"; anything else is refused for `who`.
Status parse_yarn(const json& j, const std::string& source, const std::string& who, ModelConfig* c) {
    Reader r(j, source);
    if (!r.has("rope_scaling")) return ok_status();
    const json& sub = j.at("rope_scaling");
    if (!sub.is_object()) return r.error("rope_scaling must be an object, got " + type_of(sub));
    Reader rs(sub, source + ": rope_scaling");
    MOE_ASSIGN_OR_RETURN(std::string type, rs.string("type", ""));
    if (type.empty()) {
        MOE_ASSIGN_OR_RETURN(type, rs.string("rope_type", ""));
    }
    if (type != "yarn" && type != "default")
        return r.error("rope_scaling type \"" + type + "\" is not supported for " + who + " (yarn or default)");
    if (type != "yarn") return ok_status();
    YarnScaling& y = c->yarn;
    y.enabled = true;
    MOE_ASSIGN_OR_RETURN(y.factor, rs.number("factor", 1.0, 1.0, 1e6));
    MOE_ASSIGN_OR_RETURN(y.original_max_position_embeddings,
                         rs.integer("original_max_position_embeddings", c->max_position_embeddings, 1, kMaxPositions));
    MOE_ASSIGN_OR_RETURN(y.beta_fast, rs.number("beta_fast", 32.0, 1e-3, 1e6));
    MOE_ASSIGN_OR_RETURN(y.beta_slow, rs.number("beta_slow", 1.0, 1e-3, 1e6));
    MOE_ASSIGN_OR_RETURN(y.mscale, rs.number("mscale", 0.0, 0.0, 1e3));
    MOE_ASSIGN_OR_RETURN(y.mscale_all_dim, rs.number("mscale_all_dim", 0.0, 0.0, 1e3));
    MOE_ASSIGN_OR_RETURN(y.truncate, rs.boolean("truncate", true));
    if (rs.has("attention_factor"))
        return r.error("rope_scaling attention_factor is not supported (mscale/mscale_all_dim are)");
    return ok_status();
}

// gpt-oss: layer_types, the clamped SwiGLU's limit, YaRN. Its quantization_config (the published
// MXFP4 checkpoints) is parse_quantization's.
Status parse_gpt_oss(const json& j, const std::string& source, ModelConfig* c) {
    Reader r(j, source);
    GptOssConfig& g = c->gpt_oss;
    g.enabled = true;
    MOE_ASSIGN_OR_RETURN(g.swiglu_limit, r.number("swiglu_limit", 7.0, 1e-3, 1e6));
    c->attention_bias = true;  // GptOssConfig hard-wires it
    c->norm_topk_prob = true;  // softmax over the top-k logits
    if (c->num_experts < 1) return r.error("num_local_experts must be >= 1 for gpt_oss");
    // layer_types: absent means transformers' default, sliding on even layers.
    c->layer_sliding.assign(static_cast<size_t>(c->num_layers), false);
    if (r.has("layer_types")) {
        const json& v = j.at("layer_types");
        if (!v.is_array() || static_cast<int64_t>(v.size()) != c->num_layers)
            return r.error("layer_types must be an array of num_hidden_layers (" + std::to_string(c->num_layers) +
                           ") strings, got " + (v.is_array() ? std::to_string(v.size()) + " entries" : type_of(v)));
        for (size_t i = 0; i < v.size(); ++i) {
            const json& x = v[i];
            if (!x.is_string() ||
                (x.get<std::string>() != "sliding_attention" && x.get<std::string>() != "full_attention"))
                return r.error("layer_types[" + std::to_string(i) + "] must be \"sliding_attention\" or " +
                               "\"full_attention\", got " + x.dump());
            c->layer_sliding[i] = x.get<std::string>() == "sliding_attention";
        }
    } else {
        for (int64_t i = 0; i < c->num_layers; ++i) c->layer_sliding[static_cast<size_t>(i)] = (i + 1) % 2 != 0;
    }
    MOE_RETURN_IF_ERROR(parse_yarn(j, source, "gpt_oss", c));
    if (c->rotary_dim != c->head_dim) return r.error("partial_rotary_factor is not supported for gpt_oss");
    return ok_status();
}

// MLA fields (DeepSeek-V2/V3, Kimi K2): read whenever kv_lora_rank is there, so `info` can size
// the latent cache of families it cannot serve too.
Status parse_mla(const json& j, const std::string& source, ModelConfig* c) {
    Reader r(j, source);
    if (!r.has("kv_lora_rank")) {
        if (c->family == ModelFamily::kDeepseekV3) return r.error("missing required key kv_lora_rank");
        return ok_status();
    }
    MlaConfig& m = c->mla;
    MOE_ASSIGN_OR_RETURN(m.kv_lora_rank, r.integer("kv_lora_rank", std::nullopt, 1, kMaxHidden));
    MOE_ASSIGN_OR_RETURN(m.q_lora_rank, r.integer("q_lora_rank", 0, 0, kMaxHidden));  // null: no q_a/q_b
    MOE_ASSIGN_OR_RETURN(m.qk_nope_head_dim, r.integer("qk_nope_head_dim", std::nullopt, 0, kMaxHeadDim));
    MOE_ASSIGN_OR_RETURN(m.qk_rope_head_dim, r.integer("qk_rope_head_dim", std::nullopt, 2, kMaxHeadDim));
    MOE_ASSIGN_OR_RETURN(m.v_head_dim, r.integer("v_head_dim", std::nullopt, 1, kMaxHeadDim));
    MOE_ASSIGN_OR_RETURN(m.rope_interleave, r.boolean("rope_interleave", c->family == ModelFamily::kDeepseekV3));
    MOE_ASSIGN_OR_RETURN(c->num_nextn_predict_layers, r.integer("num_nextn_predict_layers", 0, 0, kMaxLayers));
    MOE_RETURN_IF_ERROR(parse_yarn(j, source, "MLA models", c));
    if (m.qk_nope_head_dim + m.qk_rope_head_dim != c->head_dim)
        return r.error("qk_nope_head_dim + qk_rope_head_dim != head dim");  // parse order guarantees it
    return ok_status();
}

// DeepSeek-V3 / Kimi K2 routing and the checks that keep the router's indexing in range.
Status parse_deepseek_v3(const json& j, const std::string& source, ModelConfig* c) {
    Reader r(j, source);
    MOE_ASSIGN_OR_RETURN(c->norm_topk_prob, r.boolean("norm_topk_prob", true));  // transformers' default
    MOE_ASSIGN_OR_RETURN(std::string topk_method, r.string("topk_method", "noaux_tc"));
    MOE_ASSIGN_OR_RETURN(std::string scoring, r.string("scoring_func", "sigmoid"));
    if (topk_method != "noaux_tc") return r.error("topk_method \"" + topk_method + "\" is not supported (noaux_tc is)");
    if (scoring != "sigmoid") return r.error("scoring_func \"" + scoring + "\" is not supported (sigmoid is)");
    GroupRouting& g = c->group_routing;
    g.enabled = true;
    MOE_ASSIGN_OR_RETURN(g.num_groups, r.integer("n_group", 1, 1, kMaxExperts));
    MOE_ASSIGN_OR_RETURN(g.topk_groups, r.integer("topk_group", 1, 1, kMaxExperts));
    MOE_ASSIGN_OR_RETURN(g.routed_scaling_factor, r.number("routed_scaling_factor", 1.0, 0.0, 1e6));
    const int64_t E = c->num_experts;
    if (E < 1) return r.error("n_routed_experts must be >= 1 for deepseek_v3");
    if (E % g.num_groups != 0)
        return r.error("n_routed_experts (" + std::to_string(E) + ") is not divisible by n_group (" +
                       std::to_string(g.num_groups) + ")");
    if (g.num_groups > 1 && E / g.num_groups < 2)
        return r.error("n_routed_experts / n_group (" + std::to_string(E / g.num_groups) +
                       ") must be >= 2: a group is scored by its top-2 experts");
    if (g.topk_groups > g.num_groups)
        return r.error("topk_group (" + std::to_string(g.topk_groups) + ") > n_group (" + std::to_string(g.num_groups) +
                       ")");
    if (c->num_experts_per_tok > g.topk_groups * (E / g.num_groups))
        return r.error("num_experts_per_tok (" + std::to_string(c->num_experts_per_tok) +
                       ") > the experts of topk_group groups (" + std::to_string(g.topk_groups * (E / g.num_groups)) +
                       ")");
    if (c->attention_bias) return r.error("attention_bias true is not supported for deepseek_v3");
    return ok_status();
}

// quantization_config quant_method "mxfp4" on gpt-oss (transformers' Mxfp4Config:
// modules_to_not_convert); MXFP4 on another family leaves the model recognised and refused with
// the reason.
Status parse_mxfp4(const json& j, const std::string& source, ModelConfig* c) {
    Reader r(j, source);
    if (!r.has("quantization_config")) return ok_status();
    const json& q = j.at("quantization_config");
    if (!q.is_object()) return r.error("quantization_config must be an object, got " + type_of(q));
    Reader rq(q, source + ": quantization_config");
    MOE_ASSIGN_OR_RETURN(std::string method, rq.string("quant_method", ""));
    const std::string arch = c->architecture.empty() ? c->model_type : c->architecture;
    if (method != "mxfp4" || c->family != ModelFamily::kGptOss) {
        c->supported = false;
        c->unsupported_reason = arch + ": quantization_config quant_method \"" + method.substr(0, 64) +
                                "\" is not supported on this family (\"mxfp4\" on gpt-oss is)";
        return ok_status();
    }
    if (c->hidden_size % 32 != 0 || c->moe_intermediate_size % 32 != 0)
        return rq.error("mxfp4 needs hidden_size (" + std::to_string(c->hidden_size) + ") and intermediate_size (" +
                        std::to_string(c->moe_intermediate_size) + ") to be multiples of 32 (the block size)");
    c->quantization.method = method;
    if (rq.has("modules_to_not_convert")) {
        const json& m = q.at("modules_to_not_convert");
        constexpr size_t kMaxModules = 4096, kMaxModuleName = 256;
        if (!m.is_array() || m.size() > kMaxModules)
            return rq.error("modules_to_not_convert must be an array of at most " + std::to_string(kMaxModules) +
                            " strings");
        for (const json& name : m) {
            if (!name.is_string() || name.get_ref<const std::string&>().size() > kMaxModuleName)
                return rq.error("modules_to_not_convert must hold strings of at most " +
                                std::to_string(kMaxModuleName) + " bytes, got " + name.dump().substr(0, 80));
            c->quantization.modules_to_not_convert.push_back(name.get<std::string>());
        }
    }
    return ok_status();
}

// "quantization_config": FP8 e4m3 with block scales and dynamic activations, as DeepSeek-V3/R1
// and Kimi K2 publish (#20). A malformed entry is an error naming the key; a well-formed one of
// another kind (another method, static activation scales, per-tensor scales) makes the model
// unsupported with the reason, so `info` still describes it and loading refuses it up front.
Status parse_quantization(const json& j, const std::string& source, ModelConfig* c) {
    if (!j.contains("quantization_config")) return ok_status();
    const json& q = j.at("quantization_config");
    const std::string where = source + ": quantization_config";
    if (!q.is_object()) return invalid_argument(where + " must be an object, got " + type_of(q));
    Reader r(q, where);
    auto refuse = [&](const std::string& why) {
        if (c->supported) {
            c->supported = false;
            c->unsupported_reason =
                (c->architecture.empty() ? c->model_type : c->architecture) + ": quantization_config " + why;
        }
        return ok_status();
    };
    MOE_ASSIGN_OR_RETURN(std::string method, r.string("quant_method", ""));
    if (method == "mxfp4") return parse_mxfp4(j, source, c);
    if (method != "fp8")
        return refuse("quant_method \"" + method.substr(0, 64) +
                      "\" is not supported (fp8 with e4m3 block scales on DeepSeek-V3/Kimi K2, mxfp4 on gpt-oss are)");
    MOE_ASSIGN_OR_RETURN(std::string fmt, r.string("fmt", "e4m3"));
    if (fmt != "e4m3") return refuse("fmt \"" + fmt + "\" is not supported (e4m3 is)");
    MOE_ASSIGN_OR_RETURN(std::string activations, r.string("activation_scheme", "dynamic"));
    if (activations != "dynamic")
        return refuse("activation_scheme \"" + activations +
                      "\" is not supported: only \"dynamic\" (static activation scales are not read)");
    if (!r.has("weight_block_size"))
        return refuse("has no weight_block_size: FP8 with per-tensor scales is not supported, block scales are");
    const json& b = q.at("weight_block_size");
    if (!b.is_array() || b.size() != 2 || !b[0].is_number_integer() || !b[1].is_number_integer())
        return r.error("weight_block_size must be [block_n, block_k] (two integers), got " + b.dump());
    const int64_t bn = b[0].get<int64_t>(), bk = b[1].get<int64_t>();
    if (bn < 1 || bk < 1 || bn > 4096 || bk > 4096)
        return r.error("weight_block_size " + b.dump() + " must hold integers in [1, 4096]");
    c->quantization = QuantizationConfig{.method = "fp8", .fp8 = true, .block_n = bn, .block_k = bk};
    return ok_status();
}

// Qwen2/3-MoE: layer i is MoE iff i is not in mlp_only_layers, there are experts and
// (i + 1) % decoder_sparse_step == 0 (transformers Qwen3MoeDecoderLayer).
Status parse_qwen_layers(const json& j, const std::string& source, const Defaults& d, ModelConfig* c) {
    Reader r(j, source);
    int64_t step = 1;
    MOE_ASSIGN_OR_RETURN(step, r.integer("decoder_sparse_step", 1, 1, kMaxLayers));
    std::set<int64_t> mlp_only;
    if (r.has("mlp_only_layers")) {
        const json& v = j.at("mlp_only_layers");
        if (!v.is_array()) return r.error("mlp_only_layers must be an array of layer indices, got " + type_of(v));
        for (const json& x : v) {
            if (!x.is_number_integer()) return r.error("mlp_only_layers must hold integers, got " + x.dump());
            int64_t i = x.get<int64_t>();
            if (i < 0 || i >= c->num_layers)
                return r.error("mlp_only_layers index " + std::to_string(i) +
                               " out of range [0, num_hidden_layers=" + std::to_string(c->num_layers) + ")");
            mlp_only.insert(i);
        }
    }
    bool any_dense = false;
    for (int64_t i = 0; i < c->num_layers; ++i) {
        c->layer_is_moe[i] = !mlp_only.count(i) && c->num_experts > 0 && (i + 1) % step == 0;
        any_dense = any_dense || !c->layer_is_moe[i];
    }
    int64_t intermediate = 0;
    MOE_ASSIGN_OR_RETURN(intermediate, r.integer("intermediate_size", d.intermediate, 1, kMaxIntermediate));
    c->intermediate_size = any_dense ? intermediate : 0;
    return ok_status();
}

Status parse_dtype_key(const Reader& r, ModelConfig* c) {
    // transformers >= 4.56 writes "dtype"; older files "torch_dtype".
    const char* key = r.has("dtype") ? "dtype" : "torch_dtype";
    if (!r.has(key)) return ok_status();
    MOE_ASSIGN_OR_RETURN(std::string s, r.string(key, ""));
    if (s == "bfloat16" || s == "bf16") {
        c->torch_dtype = DType::kBF16;
    } else if (s == "float16" || s == "half" || s == "fp16") {
        c->torch_dtype = DType::kF16;
    } else if (s == "float32" || s == "float" || s == "fp32") {
        c->torch_dtype = DType::kF32;
    } else {
        return r.error(std::string(key) + " \"" + s + "\" is not one of bfloat16, float16, float32");
    }
    return ok_status();
}

}  // namespace

StatusOr<ModelConfig> parse_model_config(const nlohmann::json& j, const std::string& source) {
    if (!j.is_object()) return invalid_argument(source + ": must be a JSON object, got " + type_of(j));
    Reader r(j, source);
    ModelConfig c;
    try {
        if (r.has("architectures")) {
            const json& a = j.at("architectures");
            if (!a.is_array() || a.empty() || !a.at(0).is_string())
                return r.error("architectures must be a non-empty array of strings, got " + a.dump());
            c.architecture = a.at(0).get<std::string>();
        }
        MOE_ASSIGN_OR_RETURN(c.model_type, r.string("model_type", ""));
        if (c.architecture.empty() && c.model_type.empty())
            return r.error("missing required key architectures (and no model_type to fall back on)");
        const FamilyInfo fi = family_of(c.architecture, c.model_type);
        c.family = fi.family;
        const std::string arch_name = c.architecture.empty() ? c.model_type : c.architecture;
        c.supported = fi.reason == nullptr;
        if (!c.supported) c.unsupported_reason = arch_name + ": " + fi.reason;
        const Defaults d = defaults_for(c.family);

        MOE_ASSIGN_OR_RETURN(c.vocab_size, r.integer("vocab_size", std::nullopt, 1, kMaxVocab));
        MOE_ASSIGN_OR_RETURN(c.hidden_size, r.integer("hidden_size", std::nullopt, 1, kMaxHidden));
        MOE_ASSIGN_OR_RETURN(c.num_layers, r.integer("num_hidden_layers", std::nullopt, 1, kMaxLayers));
        MOE_ASSIGN_OR_RETURN(c.num_heads, r.integer("num_attention_heads", std::nullopt, 1, kMaxHeads));
        MOE_ASSIGN_OR_RETURN(c.num_kv_heads, r.integer("num_key_value_heads", c.num_heads, 1, kMaxHeads));
        if (c.num_heads % c.num_kv_heads != 0)
            return r.error("num_attention_heads (" + std::to_string(c.num_heads) +
                           ") is not divisible by num_key_value_heads (" + std::to_string(c.num_kv_heads) + ")");

        if (is_deepseek_like(c) && r.has("qk_nope_head_dim")) {
            // MLA: the q/k head is a no-RoPE part plus a RoPE part.
            int64_t nope = 0, rope = 0;
            MOE_ASSIGN_OR_RETURN(nope, r.integer("qk_nope_head_dim", std::nullopt, 0, kMaxHeadDim));
            MOE_ASSIGN_OR_RETURN(rope, r.integer("qk_rope_head_dim", std::nullopt, 2, kMaxHeadDim));
            c.head_dim = nope + rope;
            c.rotary_dim = rope;
            if (rope % 2 != 0) return r.error("qk_rope_head_dim (" + std::to_string(rope) + ") must be even for RoPE");
        } else {
            const bool has_head_dim = r.has("head_dim") || d.head_dim.has_value();
            if (!has_head_dim && c.hidden_size % c.num_heads != 0)
                return r.error("hidden_size (" + std::to_string(c.hidden_size) +
                               ") is not divisible by num_attention_heads (" + std::to_string(c.num_heads) +
                               ") and there is no head_dim");
            MOE_ASSIGN_OR_RETURN(
                c.head_dim,
                r.integer("head_dim", d.head_dim ? *d.head_dim : c.hidden_size / c.num_heads, 1, kMaxHeadDim));
            double partial = 1.0;
            MOE_ASSIGN_OR_RETURN(partial, r.number("partial_rotary_factor", 1.0, 0.0, 1.0));
            c.rotary_dim = static_cast<int64_t>(std::llround(static_cast<double>(c.head_dim) * partial));
            if (c.rotary_dim % 2 != 0)
                return r.error("rotary dims (head_dim " + std::to_string(c.head_dim) + " x partial_rotary_factor " +
                               std::to_string(partial) + " = " + std::to_string(c.rotary_dim) + ") must be even");
        }

        MOE_RETURN_IF_ERROR(parse_experts(r, d, &c));
        if (c.family == ModelFamily::kQwen3Moe || c.family == ModelFamily::kQwen2Moe)
            MOE_RETURN_IF_ERROR(parse_qwen_layers(j, source, d, &c));

        switch (c.family) {
            case ModelFamily::kMixtral:
                c.norm_topk_prob = true;
                break;
            case ModelFamily::kQwen3Moe:
            case ModelFamily::kQwen2Moe:
            case ModelFamily::kOlmoe:
            case ModelFamily::kDeepseekV3:
            case ModelFamily::kUnknown: {
                MOE_ASSIGN_OR_RETURN(c.norm_topk_prob, r.boolean("norm_topk_prob", false));
                break;
            }
            case ModelFamily::kGptOss:
                c.norm_topk_prob = true;
                break;  // softmax over the top-k only
            default:
                break;
        }
        if (c.family == ModelFamily::kQwen2Moe) {
            MOE_ASSIGN_OR_RETURN(c.shared_expert_intermediate_size,
                                 r.integer("shared_expert_intermediate_size", 5632, 0, kMaxIntermediate));
        }

        // Qwen2-MoE always has q/k/v bias (hard-wired in transformers); others read attention_bias.
        if (c.family == ModelFamily::kQwen2Moe) {
            MOE_ASSIGN_OR_RETURN(c.attention_bias, r.boolean("qkv_bias", true));
        } else {
            MOE_ASSIGN_OR_RETURN(c.attention_bias, r.boolean("attention_bias", false));
        }
        if (c.family == ModelFamily::kQwen3Moe || c.family == ModelFamily::kQwen3) {
            c.qk_norm = QkNorm::kPerHead;
        } else if (c.family == ModelFamily::kOlmoe) {
            c.qk_norm = QkNorm::kFull;
        } else if (c.family == ModelFamily::kUnknown) {
            bool use_qk_norm = false;
            MOE_ASSIGN_OR_RETURN(use_qk_norm, r.boolean("use_qk_norm", false));
            if (use_qk_norm) c.qk_norm = QkNorm::kPerHead;
        }

        double eps = 1e-6;
        MOE_ASSIGN_OR_RETURN(eps, r.number("rms_norm_eps", d.rms_eps, 0.0, 1.0));
        if (eps <= 0.0) return r.error("rms_norm_eps (" + std::to_string(eps) + ") must be > 0");
        c.rms_norm_eps = static_cast<float>(eps);
        MOE_RETURN_IF_ERROR(parse_rope(j, source, d, &c));
        MOE_ASSIGN_OR_RETURN(c.max_position_embeddings,
                             r.integer("max_position_embeddings", d.max_pos, 1, kMaxPositions));
        if (is_deepseek_like(c)) MOE_RETURN_IF_ERROR(parse_mla(j, source, &c));
        if (c.family == ModelFamily::kDeepseekV3) MOE_RETURN_IF_ERROR(parse_deepseek_v3(j, source, &c));
        if (c.family == ModelFamily::kGptOss) MOE_RETURN_IF_ERROR(parse_gpt_oss(j, source, &c));
        MOE_RETURN_IF_ERROR(parse_quantization(j, source, &c));

        // Qwen configs carry a sliding_window that is off unless use_sliding_window says so.
        bool use_sw = true;
        if (c.family == ModelFamily::kQwen3Moe || c.family == ModelFamily::kQwen2Moe ||
            c.family == ModelFamily::kQwen3) {
            MOE_ASSIGN_OR_RETURN(use_sw, r.boolean("use_sliding_window", false));
        }
        if (use_sw) {
            MOE_ASSIGN_OR_RETURN(c.sliding_window, r.integer("sliding_window", 0, 0, kMaxPositions));
        }
        MOE_ASSIGN_OR_RETURN(c.tie_word_embeddings, r.boolean("tie_word_embeddings", false));
        MOE_RETURN_IF_ERROR(parse_dtype_key(r, &c));
        MOE_ASSIGN_OR_RETURN(c.bos_token_id, r.integer("bos_token_id", -1, 0, kMaxTokenId));
        MOE_RETURN_IF_ERROR(r.token_ids("eos_token_id", &c.eos_token_ids));
    } catch (const nlohmann::json::exception& e) {
        // The typed readers check before converting; this is a backstop, not a path we expect.
        return invalid_argument(source + ": " + e.what());
    }
    return c;
}

StatusOr<ModelConfig> load_model_config(const std::filesystem::path& dir) {
    // Configs are a few KB; refuse to slurp something that is clearly not one.
    auto read_json = [](const std::filesystem::path& p, json* out) -> Status {
        MOE_ASSIGN_OR_RETURN(*out, read_json_file(p, kMaxConfigFileBytes));
        return ok_status();
    };
    const auto config_path = dir / "config.json";
    json j;
    MOE_RETURN_IF_ERROR(read_json(config_path, &j));
    MOE_ASSIGN_OR_RETURN(ModelConfig c, parse_model_config(j, config_path.string()));
    const auto gen_path = dir / "generation_config.json";
    std::error_code ec;
    if (std::filesystem::exists(gen_path, ec)) {
        json g;
        MOE_RETURN_IF_ERROR(read_json(gen_path, &g));
        if (!g.is_object()) return invalid_argument(gen_path.string() + ": must be a JSON object");
        Reader r(g, gen_path.string());
        MOE_RETURN_IF_ERROR(r.token_ids("eos_token_id", &c.eos_token_ids));
    }
    return c;
}

int64_t ModelConfig::total_params() const {
    const int64_t H = hidden_size;
    int64_t attn = H * num_heads * head_dim + 2 * H * num_kv_heads * head_dim + num_heads * head_dim * H;
    if (is_mla()) {
        const MlaConfig& m = mla;
        const int64_t qk = m.qk_nope_head_dim + m.qk_rope_head_dim;
        attn =
            m.q_lora_rank > 0 ? H * m.q_lora_rank + m.q_lora_rank + m.q_lora_rank * num_heads * qk : H * num_heads * qk;
        attn += H * (m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank +
                m.kv_lora_rank * num_heads * (m.qk_nope_head_dim + m.v_head_dim) + num_heads * m.v_head_dim * H;
    }
    if (attention_bias) attn += (num_heads + 2 * num_kv_heads) * head_dim;
    if (gpt_oss.enabled) attn += H + num_heads;  // o_proj bias, sinks
    if (qk_norm == QkNorm::kPerHead) attn += 2 * head_dim;
    if (qk_norm == QkNorm::kFull) attn += (num_heads + num_kv_heads) * head_dim;
    int64_t total = vocab_size * H * (tie_word_embeddings ? 1 : 2) + H;  // embeddings, lm_head, final norm
    for (int64_t i = 0; i < num_layers; ++i) {
        total += 2 * H + attn;
        const bool moe = static_cast<size_t>(i) < layer_is_moe.size() && layer_is_moe[i];
        if (moe) {
            total += num_experts * H + num_experts * 3 * H * moe_intermediate_size;
            if (group_routing.enabled) total += num_experts;                                  // e_score_correction_bias
            if (gpt_oss.enabled) total += num_experts * (1 + 2 * moe_intermediate_size + H);  // router, expert biases
            if (shared_expert_intermediate_size > 0) {
                total += 3 * H * shared_expert_intermediate_size;
                if (family == ModelFamily::kQwen2Moe) total += H;  // shared_expert_gate
            }
        } else {
            total += 3 * H * intermediate_size;
        }
    }
    return total;
}

int64_t ModelConfig::routed_expert_weights() const {
    int64_t n = 0;
    for (int64_t i = 0; i < num_layers; ++i)
        if (static_cast<size_t>(i) < layer_is_moe.size() && layer_is_moe[i])
            n += num_experts * 3 * hidden_size * moe_intermediate_size;
    return n;
}

int64_t ModelConfig::num_sliding_layers() const {
    int64_t n = 0;
    for (int64_t i = 0; i < num_layers; ++i) n += window_of(i) > 0 ? 1 : 0;
    return n;
}

int64_t ModelConfig::active_params_per_token() const {
    int64_t inactive = 0;
    for (int64_t i = 0; i < num_layers; ++i) {
        if (static_cast<size_t>(i) < layer_is_moe.size() && layer_is_moe[i])
            inactive +=
                (num_experts - num_experts_per_tok) * (3 * hidden_size * moe_intermediate_size +
                                                       (gpt_oss.enabled ? 2 * moe_intermediate_size + hidden_size : 0));
    }
    return total_params() - inactive;
}

}  // namespace moe
