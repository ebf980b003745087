// gpt-oss's routed experts as the checkpoint stores them, into the per-expert matrices and
// biases the moe_experts op reads.
//
// Checkpoint (transformers GptOssExperts, bf16/f32 save_pretrained), per MoE layer:
//   mlp.experts.gate_up_proj       [E, H, 2I]  x @ gate_up_proj[e]; gate = [..., ::2], up = [..., 1::2]
//   mlp.experts.gate_up_proj_bias  [E, 2I]     interleaved the same way
//   mlp.experts.down_proj          [E, I, H]   act @ down_proj[e]
//   mlp.experts.down_proj_bias     [E, H]
// Kept as (the Linear layout of every other family):
//   gate[e], up[e]: [I, H]   gate[e][i, h] = gate_up_proj[e, h, 2i], up[e][i, h] = gate_up_proj[e, h, 2i + 1]
//   down[e]:        [H, I]   down[e][h, i] = down_proj[e, i, h]
//   b_gate[e], b_up[e]: f32 [I] (de-interleaved), b_down[e]: f32 [H]
//
// The published checkpoints store the two matrices as MXFP4 (config.json quantization_config
// quant_method "mxfp4"): gate_up_proj_blocks u8 [E, 2I, H/32, 16] + gate_up_proj_scales u8
// [E, 2I, H/32] (rows = output features, gate and up interleaved: rows 0::2 and 1::2) and
// down_proj_blocks [E, H, I/32, 16] + down_proj_scales [E, H, I/32]. They are kept as they are
// (WeightLoader::mxfp4_expert -> Backend::prepare_quantized_weight: 4.25 bits per weight); the
// biases and the slot bookkeeping are the same.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/weight_loader.h"

namespace moe {

// One MoE layer's routed experts, indexed by slot (= expert without expert parallelism); the
// slots of other ranks stay empty.
struct GptOssExperts {
    std::vector<WeightView> gate, up, down;
    std::vector<TensorView> b_gate, b_up, b_down;
};

// `prefix`: "model.layers.N.mlp.experts."; `slot_expert[s]`: the logical expert slot s holds, or
// -1 when slot s is another rank's (its tensors' slices are not read). Matrices are kept in
// `dtype` (f32 or bf16), or in MXFP4 when c.quantization says so; biases in f32. Errors name the tensor, its file and
// both shapes.
Status load_gpt_oss_experts(WeightLoader& wl, const ModelConfig& c, const std::string& prefix,
                            std::span<const int64_t> slot_expert, DType dtype, GptOssExperts* out);

}  // namespace moe
