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

}  // namespace moe
