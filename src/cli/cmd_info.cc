// moeserve info --model DIR [--json]: what a model directory holds, without loading it.
//
// Works on a directory with only config.json (sizes are then estimated). Exit code 0 when the
// config parses, also for families this build cannot serve and for absent weight shards; 1 when
// config.json is broken or weights that are present fail validation.
#include <cstdio>
#include <filesystem>
#include <iomanip>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "cli/command.h"
#include "core/json_limits.h"
#include "model/config.h"
#include "model/expected_tensors.h"
#include "model/kv_cache.h"
#include "model/weights.h"

namespace moe::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string human(double v, const char* const* units, int n_units, double base) {
    int u = 0;
    while (u + 1 < n_units && v >= base) {
        v /= base;
        ++u;
    }
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.2f %s", v, units[u]);
    return buf;
}

// 40 -> "40", 2.827 -> "2.827".
std::string shortest(double v) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%g", v);
    return buf;
}

std::string human_params(int64_t n) {
    static const char* const kUnits[] = {"", "K", "M", "B", "T"};
    return human(static_cast<double>(n), kUnits, 5, 1000.0);
}

std::string human_bytes(uint64_t n) {
    static const char* const kUnits[] = {"B", "KB", "MB", "GB", "TB"};
    return human(static_cast<double>(n), kUnits, 5, 1000.0);
}

// config.json again, raw, for the keys ModelConfig does not model (MLA ranks, quantization).
// Through the same bounded reader as the loaders (depth, size, no FIFOs); null when unreadable.
json read_raw(const fs::path& p) {
    auto j = read_json_file(p, size_t{64} << 20);
    return j.ok() ? std::move(j).value() : json();
}

int64_t raw_int(const json& j, const char* key) {
    if (!j.is_object() || !j.contains(key) || !j.at(key).is_number_integer()) return 0;
    const int64_t v = j.at(key).get<int64_t>();
    return v > 0 && v < (int64_t{1} << 24) ? v : 0;
}

std::string index_total_size(const fs::path& dir) {
    const json idx = read_raw(dir / kWeightsIndexFile);
    if (idx.is_object() && idx.contains("metadata") && idx["metadata"].is_object() &&
        idx["metadata"].contains("total_size") && idx["metadata"]["total_size"].is_number_unsigned())
        return human_bytes(idx["metadata"]["total_size"].get<uint64_t>());
    return "";
}

int run_info(const std::string& model_dir, bool as_json) {
    const fs::path dir(model_dir);
    auto cfg = load_model_config(dir);
    if (!cfg.ok()) {
        std::fprintf(stderr, "moeserve info: %s\n", cfg.status().to_string().c_str());
        return 1;
    }
    const ModelConfig& c = *cfg;
    const json raw = read_raw(dir / "config.json");
    const int64_t total = c.total_params();
    const int64_t active = c.active_params_per_token();
    // What one token costs in the KV cache at bf16 (the serving default), per the model's layout.
    const int64_t kv_bytes_per_token = KvCache::bytes_per_block(c, 1, DType::kBF16);
    const KvLayout kv = kv_layout(c);
    int64_t moe_layers = 0;
    for (bool m : c.layer_is_moe) moe_layers += m ? 1 : 0;
    std::string quant;
    if (raw.is_object() && raw.contains("quantization_config") && raw["quantization_config"].is_object()) {
        const json& q = raw["quantization_config"];
        quant =
            q.contains("quant_method") && q["quant_method"].is_string() ? q["quant_method"].get<std::string>() : "yes";
        if (q.contains("fmt") && q["fmt"].is_string()) quant += " " + q["fmt"].get<std::string>();
    }

    // Per layer type (gpt-oss alternates sliding-window and full layers): a token's KV bytes in
    // one layer are the same for both; a sliding layer reads only the last sliding_window of them.
    const int64_t num_sliding = c.num_sliding_layers();
    const int64_t kv_layer_bytes = c.num_layers > 0 ? kv_bytes_per_token / c.num_layers : 0;
    // MXFP4 (the published gpt-oss checkpoints): the routed experts' matrices as blocks of 32
    // e2m1 values (16 bytes) plus one e8m0 scale byte, 4.25 bits per weight; the rest bf16.
    const int64_t expert_weights = c.routed_expert_weights();
    const int64_t mxfp4_expert_bytes = expert_weights / 32 * 17;
    const int64_t mxfp4_total_bytes = mxfp4_expert_bytes + (total - expert_weights) * 2;

    // Weights: measured when the files are here, estimated otherwise.
    int exit_code = 0;
    std::string weights_line, weights_check;
    uint64_t weight_bytes = 0;
    bool weights_measured = false;
    const uint64_t estimate = quant == "mxfp4" ? static_cast<uint64_t>(mxfp4_total_bytes)
                                               : static_cast<uint64_t>(total) * dtype_size(c.torch_dtype);
    if (!weights_present(dir)) {
        weights_line =
            "weights absent: estimated " + human_bytes(estimate) + " at " +
            (quant == "mxfp4" ? std::string("mxfp4 experts + bf16") : std::string(dtype_name(c.torch_dtype)));
        if (!quant.empty()) weights_line += " (checkpoint is quantized: " + quant + ")";
    } else {
        auto store = WeightStore::open(dir);
        if (store.ok()) {
            weights_measured = true;
            weight_bytes = store->total_bytes();
            weights_line = human_bytes(weight_bytes) + " in " + std::to_string(store->num_files()) + " file(s), " +
                           std::to_string(store->names().size()) + " tensors";
            if (c.supported) {
                const Status s = check_weights(c, *store);
                weights_check = s.ok() ? "ok: every tensor matches config.json" : s.to_string();
                if (!s.ok()) exit_code = 1;
            }
        } else if (store.status().code() == StatusCode::kNotFound) {
            // Typical for a config-only checkout: the index is there, the shards are not.
            const std::string listed = index_total_size(dir);
            weights_line =
                "weights absent (" + store.status().message() + "): estimated " + human_bytes(estimate) + " at " +
                (quant == "mxfp4" ? std::string("mxfp4 experts + bf16") : std::string(dtype_name(c.torch_dtype))) +
                (listed.empty() ? "" : ", index says " + listed);
        } else {
            weights_line = "invalid: " + store.status().to_string();
            exit_code = 1;
        }
    }

    if (as_json) {
        json out = {
            {"model_dir", dir.string()},
            {"family", family_name(c.family)},
            {"architecture", c.architecture},
            {"model_type", c.model_type},
            {"supported", c.supported},
            {"unsupported_reason", c.unsupported_reason},
            {"num_layers", c.num_layers},
            {"num_moe_layers", moe_layers},
            {"hidden_size", c.hidden_size},
            {"num_heads", c.num_heads},
            {"num_kv_heads", c.num_kv_heads},
            {"head_dim", c.head_dim},
            {"rotary_dim", c.rotary_dim},
            {"num_experts", c.num_experts},
            {"num_experts_per_tok", c.num_experts_per_tok},
            {"moe_intermediate_size", c.moe_intermediate_size},
            {"intermediate_size", c.intermediate_size},
            {"shared_expert_intermediate_size", c.shared_expert_intermediate_size},
            {"norm_topk_prob", c.norm_topk_prob},
            {"vocab_size", c.vocab_size},
            {"dtype", dtype_name(c.torch_dtype)},
            {"quantization", quant},
            {"total_params", total},
            {"active_params_per_token", active},
            {"max_position_embeddings", c.max_position_embeddings},
            {"sliding_window", c.sliding_window},
            {"rope_theta", c.rope_theta},
            {"eos_token_ids", c.eos_token_ids},
            {"kv_bytes_per_token_bf16", kv_bytes_per_token},
            {"kv_cache_layout", kv.describe()},
            {"num_nextn_predict_layers", c.num_nextn_predict_layers},
            {"weights", weights_line},
            {"weights_measured", weights_measured},
            {"weight_bytes", weights_measured ? weight_bytes : estimate},
        };
        if (!weights_check.empty()) out["weights_check"] = weights_check;
        if (!c.layer_sliding.empty()) {
            out["num_sliding_layers"] = num_sliding;
            out["num_full_layers"] = c.num_layers - num_sliding;
            out["kv_bytes_per_token_per_layer_bf16"] = {{"sliding_attention", kv_layer_bytes},
                                                        {"full_attention", kv_layer_bytes}};
        }
        if (c.gpt_oss.enabled) {
            out["mxfp4_expert_weights"] = expert_weights;
            out["mxfp4_expert_bytes"] = mxfp4_expert_bytes;
            out["mxfp4_checkpoint_bytes"] = mxfp4_total_bytes;
        }
        std::printf("%s\n", out.dump(2).c_str());
        return exit_code;
    }

    std::ostringstream os;
    os << "model          " << dir.string() << "\n"
       << "architecture   " << c.architecture << " (family " << family_name(c.family) << ", model_type "
       << (c.model_type.empty() ? "-" : c.model_type) << ")\n"
       << "supported      " << (c.supported ? "yes" : "no: " + c.unsupported_reason) << "\n"
       << "layers         " << c.num_layers << " (" << moe_layers << " MoE, " << c.num_layers - moe_layers
       << " dense)\n"
       << "hidden         " << c.hidden_size << "\n"
       << "attention      " << c.num_heads << " heads, " << c.num_kv_heads << " kv heads, head_dim " << c.head_dim
       << ", rotary " << c.rotary_dim << (c.attention_bias ? ", qkv bias" : "")
       << (c.gpt_oss.enabled ? ", o bias, sinks" : "")
       << (c.qk_norm == QkNorm::kPerHead ? ", q/k norm per head"
           : c.qk_norm == QkNorm::kFull  ? ", q/k norm full"
                                         : "")
       << "\n";
    if (c.num_experts > 0) {
        os << "experts        " << c.num_experts << ", top-" << c.num_experts_per_tok
           << (c.norm_topk_prob ? " (renormalized)" : "") << ", expert intermediate " << c.moe_intermediate_size << "\n"
           << "shared expert  "
           << (c.shared_expert_intermediate_size > 0
                   ? "intermediate " + std::to_string(c.shared_expert_intermediate_size)
                   : std::string("none"))
           << "\n";
    } else {
        os << "experts        none (dense)\n";
    }
    if (c.intermediate_size > 0) os << "dense MLP      intermediate " << c.intermediate_size << "\n";
    os << "vocab          " << c.vocab_size << (c.tie_word_embeddings ? " (tied embeddings)" : "") << "\n"
       << "dtype          " << dtype_name(c.torch_dtype) << (quant.empty() ? "" : " (quantized: " + quant + ")") << "\n"
       << "parameters     " << human_params(total) << " total, " << human_params(active) << " active per token\n"
       << "weights        " << weights_line << "\n"
       << "kv cache       " << kv_bytes_per_token << " B/token at bf16 (" << kv.describe() << ")\n";
    if (!c.layer_sliding.empty())
        os << "layer types    " << num_sliding << " sliding_attention (window " << c.sliding_window << "), "
           << c.num_layers - num_sliding << " full_attention; KV " << kv_layer_bytes
           << " B/token per layer of either type at bf16: sliding layers " << num_sliding * kv_layer_bytes
           << " B/token (read over the last " << c.sliding_window << " tokens only), full layers "
           << (c.num_layers - num_sliding) * kv_layer_bytes << " B/token\n";
    if (c.gpt_oss.enabled)
        os << "mxfp4          experts " << human_params(expert_weights)
           << " weights = " << human_bytes(mxfp4_expert_bytes)
           << " at 4.25 bits/weight (blocks of 32 e2m1 + e8m0 scale); checkpoint with the rest in bf16 "
           << human_bytes(mxfp4_total_bytes) << "\n";
    if (c.is_mla()) {
        const MlaConfig& m = c.mla;
        os << "mla            q_lora_rank " << (m.q_lora_rank > 0 ? std::to_string(m.q_lora_rank) : "none")
           << ", kv_lora_rank " << m.kv_lora_rank << ", qk " << m.qk_nope_head_dim << " nope + " << m.qk_rope_head_dim
           << " rope, v " << m.v_head_dim << (m.rope_interleave ? ", interleaved rope" : "")
           << (c.yarn.enabled ? ", yarn x" + shortest(c.yarn.factor) : "") << "\n";
    }
    if (c.group_routing.enabled)
        os << "routing        sigmoid, noaux_tc bias, " << c.group_routing.num_groups << " groups keep "
           << c.group_routing.topk_groups << ", scaled x" << shortest(c.group_routing.routed_scaling_factor) << "\n";
    if (c.num_nextn_predict_layers > 0)
        os << "mtp            " << c.num_nextn_predict_layers
           << " next-token-prediction layer(s) in the checkpoint: recognised, not loaded\n";
    if (!weights_check.empty()) os << "weights check  " << weights_check << "\n";
    os << "context        " << c.max_position_embeddings
       << (c.sliding_window > 0 ? " (sliding window " + std::to_string(c.sliding_window) + ")" : "") << "\n"
       << "rope theta     " << std::fixed
       << std::setprecision(c.rope_theta == static_cast<int64_t>(c.rope_theta) ? 0 : 3) << c.rope_theta << "\n"
       << "eos tokens     ";
    for (size_t i = 0; i < c.eos_token_ids.size(); ++i) os << (i ? ", " : "") << c.eos_token_ids[i];
    os << "\n";
    std::fputs(os.str().c_str(), stdout);
    return exit_code;
}

const Registrar kRegistrar("info", [](CLI::App& app, int& exit_code) {
    struct Flags {
        std::string model;
        bool json = false;
    };
    auto flags = std::make_shared<Flags>();
    CLI::App* cmd = app.add_subcommand("info", "Describe a model directory: family, shapes, parameters, weights");
    cmd->add_option("--model", flags->model, "model directory (config.json, optional safetensors)")->required();
    cmd->add_flag("--json", flags->json, "print JSON instead of text");
    cmd->callback([flags, &exit_code] { exit_code = run_info(flags->model, flags->json); });
});

}  // namespace
}  // namespace moe::cli
