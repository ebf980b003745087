#!/usr/bin/env python3
"""Writes the FP8 block-scaled DeepSeek-V3 fixtures (#20) into `fixtures_fp8/<name>/`.

A tiny random DeepseekV3ForCausalLM (make_fixtures.py's construction and checks) is quantized to
e4m3 blocks in the layout DeepSeek-V3/R1 and Kimi K2 publish (fp8_quant.py: `X.weight` F8_E4M3 plus
`X.weight_scale_inv` f32 per block, quantization_config in config.json). The reference logits
come from transformers on the DEQUANTIZED weights, in f32: the model the FP8 files stand for, so
the only difference left between moeserve and the reference is moeserve's own arithmetic (its
FP8 products take x rounded to bf16).

  deepseek_v3_fp8         blocks [128, 128], hidden 160 and intermediates 200 / 48: most matrices
                          have a full and a partial block, the small ones only a partial one
  deepseek_v3_fp8_b32x64  blocks [32, 64] (read from the config), same shapes, another seed

The fixtures live apart from fixtures/ because the f32 suites there (1e-4) do not apply.

    python3 tests/reference/make_fp8_fixture.py [names...]

Deterministic: running it twice gives byte-identical files.
"""
import json
import os
import shutil
import sys

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

import make_fixtures as mf
from fp8_quant import dequantize_fp8_blocks, quantization_config, quantize_fp8_blocks

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_ROOT = os.path.join(HERE, "fixtures_fp8")


def deepseek_v3_fp8():
    vocab = 288
    # As make_fixtures.deepseek_v3 (q_lora_rank, YaRN, interleaved rope, a dense layer first,
    # grouped routing, two shared experts), with dims past 128 so blocks are full and partial.
    cfg = DeepseekV3Config(
        vocab_size=vocab, hidden_size=160, intermediate_size=200, moe_intermediate_size=48,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=40,
        kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=12,
        n_routed_experts=8, n_shared_experts=2, num_experts_per_tok=3, n_group=4, topk_group=2,
        routed_scaling_factor=2.5, norm_topk_prob=True, first_k_dense_replace=1,
        rope_interleave=True, attention_bias=False, tie_word_embeddings=False,
        rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64,
                      "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 0.8},
        **mf.COMMON, **mf.special_ids(vocab))
    return DeepseekV3ForCausalLM, cfg


# name -> (builder, base seed, weight_block_size)
FIXTURES = {
    "deepseek_v3_fp8": (deepseek_v3_fp8, 9000, (128, 128)),
    "deepseek_v3_fp8_b32x64": (deepseek_v3_fp8, 9100, (32, 64)),
}


def write_fixture(name, builder, base_seed, block):
    for attempt in range(mf.MAX_SEED_TRIES):
        seed = base_seed + attempt
        print(f"{name}: seed {seed}, blocks {list(block)}")
        model, cfg, gen = mf.build(builder, seed)
        prompts = mf.make_prompts(cfg.vocab_size, {cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id}, gen)
        quantized = quantize_fp8_blocks(model.state_dict(), block)
        # The reference model holds exactly what the FP8 files stand for.
        model.load_state_dict(dequantize_fp8_blocks(quantized, block))
        mf.routing_summary(model, cfg, prompts)
        tensors, greedy, problems = mf.run_reference(model, cfg, prompts)
        if not problems:
            break
        print("  WARNING, trying the next seed: " + "; ".join(problems))
    else:
        raise SystemExit(f"{name}: no seed in {mf.MAX_SEED_TRIES} tries gave clear greedy steps")

    out_dir = os.path.join(OUT_ROOT, name)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    # The checkpoint's tensor names as save_pretrained writes them; their FP8 form replaces the file.
    weights_path = os.path.join(out_dir, "model.safetensors")
    with safe_open(weights_path, "pt") as f:
        names = list(f.keys())
    out = {}
    num_fp8 = 0
    for n in names:
        out[n] = quantized[n].contiguous()
        scale = n[: -len(".weight")] + ".weight_scale_inv" if n.endswith(".weight") else None
        if scale in quantized:
            out[scale] = quantized[scale].contiguous()
            num_fp8 += 1
    save_file(out, weights_path, metadata={"format": "pt"})
    with open(os.path.join(out_dir, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    config["quantization_config"] = quantization_config(block)
    with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    save_file(tensors, os.path.join(out_dir, "reference.safetensors"), metadata={"format": "pt"})
    ref = {
        "family": cfg.architectures[0] if cfg.architectures else type(model).__name__,
        "dtype": "float32 (dequantized FP8 weights)",
        "weight_block_size": list(block),
        "fp8_matrices": num_fp8,
        "seed": seed,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__.split("+")[0],
        "new_tokens": mf.NEW_TOKENS,
        "prompts": prompts,
        "greedy": greedy,
    }
    body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(ref[k])}" for k in sorted(ref))
    with open(os.path.join(out_dir, "reference.json"), "w", encoding="utf-8") as f:
        f.write("{\n" + body + "\n}\n")
    print(f"  saved {len(out)} tensors ({num_fp8} in FP8) to {os.path.relpath(out_dir, HERE)}")


def main(argv):
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    names = argv[1:] or list(FIXTURES)
    unknown = [n for n in names if n not in FIXTURES]
    if unknown:
        raise SystemExit(f"unknown fixture(s) {unknown}; known: {list(FIXTURES)}")
    for name in names:
        builder, seed, block = FIXTURES[name]
        write_fixture(name, builder, seed, block)


if __name__ == "__main__":
    main(sys.argv)
