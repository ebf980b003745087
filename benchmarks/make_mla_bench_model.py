#!/usr/bin/env python3
"""Writes a random DeepSeek-V3-shaped model (bf16 safetensors) for benchmarks/mla_decode_bench.

    python3 benchmarks/make_mla_bench_model.py OUT_DIR [--hidden 1024] [--layers 4]

MLA ranks and experts are scaled down from DeepSeek-V3 (first layer dense, grouped sigmoid
routing, one shared expert); the weights are random, so only timings mean anything.
"""
import argparse

import torch
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--layers", type=int, default=4)
    a = p.parse_args()
    cfg = DeepseekV3Config(
        vocab_size=32000, hidden_size=a.hidden, intermediate_size=3 * a.hidden, moe_intermediate_size=a.hidden // 2,
        num_hidden_layers=a.layers, num_attention_heads=16, num_key_value_heads=16, q_lora_rank=a.hidden // 2,
        kv_lora_rank=256, qk_nope_head_dim=64, qk_rope_head_dim=32, v_head_dim=64, n_routed_experts=16,
        n_shared_experts=1, num_experts_per_tok=4, n_group=4, topk_group=2, routed_scaling_factor=2.5,
        first_k_dense_replace=1, max_position_embeddings=8192, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = DeepseekV3ForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(a.out, safe_serialization=True)
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters -> {a.out}")


if __name__ == "__main__":
    main()
