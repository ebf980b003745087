// The built-in demo model: a small random Qwen3-MoE-shaped model and a byte-level BPE tokenizer
// made in code (fixed seed). Its output is meaningless; it exists so that `moeserve serve` works
// on a machine with nothing else. Used by `moeserve serve` and the engine and server tests.
#pragma once

#include <memory>

#include "model/moe_transformer.h"
#include "moe/backend.h"
#include "moe/status.h"
#include "moe/tokenizer.h"

namespace moe {

struct DemoModel {
    std::unique_ptr<MoeTransformer> model;
    std::unique_ptr<Tokenizer> tokenizer;
};
StatusOr<DemoModel> make_demo_model(Backend& backend);

}  // namespace moe
