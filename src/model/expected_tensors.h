// The tensors a supported family's checkpoint must hold, in Hugging Face hub naming, with the
// shapes config.json implies. Used to check weights before anything runs.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/weights.h"
#include "moe/status.h"

namespace moe {

struct ExpectedTensor {
    std::string name;
    std::vector<int64_t> shape;
};

// Empty for families that are not supported (their layouts are not modelled). Allocates in
// proportion to the sizes config.json claims: for checks, use for_each_expected_tensor.
std::vector<ExpectedTensor> expected_tensors(const ModelConfig& config);

// The same tensors, in the same order, handed to `visit` one at a time until it returns false;
// constant memory. Nothing for unsupported families.
void for_each_expected_tensor(const ModelConfig& config, const std::function<bool(const ExpectedTensor&)>& visit);

// Reports the first expected tensor that is missing, has another shape, or is not f32/bf16/f16
// (message names the tensor, its file and both shapes). kUnimplemented for unsupported families.
Status check_weights(const ModelConfig& config, const WeightStore& weights);

// Whether a published FP8 checkpoint (DeepSeek-V3/R1, Kimi K2; tests/reference/fp8_quant.py
// follows the same rule) stores this tensor in e4m3: the 2-D weights of the layers except the
// norms and the MoE router. The embedding and lm_head stay bf16.
bool published_fp8_tensor(const std::string& name, const std::vector<int64_t>& shape);

// What an FP8 checkpoint of `config` holds in e4m3 (for `info`): its matrices, their weights (1
// byte each), their f32 block scales, and the weights of the MLA kv_b_proj matrices the loader
// expands at load (weight absorption reads them plain). All zero without an FP8
// quantization_config.
struct Fp8Footprint {
    int64_t matrices = 0, weights = 0, scale_bytes = 0, expanded_weights = 0;
};
Fp8Footprint fp8_footprint(const ModelConfig& config);

}  // namespace moe
