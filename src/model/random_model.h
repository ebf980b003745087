// Random-initialized models made in memory: the built-in demo model, benchmarks and tests that
// need a model shape without files. Weights are deterministic in the seed.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "model/config.h"
#include "model/weight_source.h"

namespace moe {

struct RandomModelShape {
    std::string architecture = "Qwen3MoeForCausalLM";
    int64_t vocab_size = 512;
    int64_t hidden_size = 128;
    int64_t num_layers = 2;
    int64_t num_heads = 4;
    int64_t num_kv_heads = 2;
    int64_t head_dim = 32;
    int64_t num_experts = 8;
    int64_t num_experts_per_tok = 2;
    int64_t moe_intermediate_size = 128;
    int64_t intermediate_size = 256;
    int64_t max_position_embeddings = 4096;
};

// A Hugging Face style config.json for the shape (Qwen3-MoE keys).
nlohmann::json random_model_config_json(const RandomModelShape& shape);

// Every tensor the config implies, filled with N(0, std) values (norm weights near 1),
// stored as `dtype` (f32 or bf16). Generated on first access of each tensor and kept.
std::shared_ptr<const WeightSource> make_random_weights(const ModelConfig& config, uint64_t seed, DType dtype);

}  // namespace moe
