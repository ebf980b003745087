#!/usr/bin/env python3
"""Builds one random-weight MoE model and writes it for both engines (issues 6 and 20).

    make_models.py --shape moe-s|qwen3-a3b-8L|tiny|ds-s|ds-tiny --out DIR [--seed 1234]

DIR/hf/    config.json + model.safetensors (Hugging Face names, bf16): what `moeserve` loads.
DIR/model-bf16.gguf  the same numbers for llama.cpp (BF16 matrices; 1-D norms, the router and
           the routing bias in F32, which holds every bf16 value exactly).

Two families: Qwen3-MoE (GGUF architecture qwen3moe) and DeepSeek-V3 (shapes ds-*: HF model_type
deepseek_v3, GGUF architecture deepseek2 with MLA: kv_b_proj split into attn_k_b (transposed per
head) and attn_v_b as llama.cpp's converter splits it, so llama.cpp runs its absorbed-MLA graph and
keeps the latent cache; sigmoid gating, the e_score_correction bias as exp_probs_b, grouped
routing, one always-on shared expert, leading dense layers).

The GGUF is written from the safetensors file just written (memory-mapped), so the two files
cannot drift apart: every matrix is the same bf16 bits in both.
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

SHAPES = {
    # Issue 6's reference shapes.
    "moe-s": dict(vocab_size=32000, hidden_size=1024, num_layers=16, num_heads=16, num_kv_heads=4, head_dim=64,
                  num_experts=32, num_experts_per_tok=4, moe_intermediate_size=512),
    "qwen3-a3b-8L": dict(vocab_size=151936, hidden_size=2048, num_layers=8, num_heads=32, num_kv_heads=4,
                         head_dim=128, num_experts=128, num_experts_per_tok=8, moe_intermediate_size=768),
    # For tests: builds in about a second. Head dim 64 because llama.cpp's CPU kernels prefer
    # multiples of 32 and the vocab is a multiple of 64 for the same reason.
    "tiny": dict(vocab_size=512, hidden_size=256, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=64,
                 num_experts=8, num_experts_per_tok=2, moe_intermediate_size=128),
    # Issue 20's DeepSeek-shaped model, scaled to this machine: hidden 2048, 8 layers (the first
    # dense), 64 routed experts top-6 in 8 groups keeping 4, one shared expert; MLA ranks scaled
    # from V3's (q 1536 -> 512, kv 512 -> 256; head dims 128/64/128 as V3), 16 heads. 1.65 B
    # parameters, 3.3 GB in bf16 (x2 files).
    "ds-s": dict(family="deepseek2", vocab_size=32000, hidden_size=2048, num_layers=8, first_k_dense=1,
                 num_heads=16, q_lora_rank=512, kv_lora_rank=256, qk_nope_head_dim=128, qk_rope_head_dim=64,
                 v_head_dim=128, intermediate_size=5632, num_experts=64, num_experts_per_tok=6, n_group=8,
                 topk_group=4, n_shared_experts=1, moe_intermediate_size=512, routed_scaling_factor=2.5),
    # For the same-model check and tests: the same structure, seconds to build.
    "ds-tiny": dict(family="deepseek2", vocab_size=512, hidden_size=256, num_layers=3, first_k_dense=1,
                    num_heads=4, q_lora_rank=96, kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=32,
                    v_head_dim=32, intermediate_size=512, num_experts=16, num_experts_per_tok=4, n_group=4,
                    topk_group=2, n_shared_experts=1, moe_intermediate_size=128, routed_scaling_factor=2.5),
}


def is_ds(s: dict) -> bool:
    return s.get("family") == "deepseek2"

ROPE_THETA = 1000000.0
RMS_EPS = 1e-6
MAX_POS = 4096


def hf_config(s: dict) -> dict:
    if is_ds(s):
        return ds_hf_config(s)
    return {
        "architectures": ["Qwen3MoeForCausalLM"],
        "model_type": "qwen3_moe",
        "vocab_size": s["vocab_size"],
        "hidden_size": s["hidden_size"],
        "num_hidden_layers": s["num_layers"],
        "num_attention_heads": s["num_heads"],
        "num_key_value_heads": s["num_kv_heads"],
        "head_dim": s["head_dim"],
        "num_experts": s["num_experts"],
        "num_experts_per_tok": s["num_experts_per_tok"],
        "moe_intermediate_size": s["moe_intermediate_size"],
        "intermediate_size": s["moe_intermediate_size"] * 4,  # unused: every layer is MoE
        "norm_topk_prob": True,  # llama.cpp's qwen3moe graph always renormalizes the top-k weights
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
        "rms_norm_eps": RMS_EPS,
        "rope_theta": ROPE_THETA,
        "max_position_embeddings": MAX_POS,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "hidden_act": "silu",
        "torch_dtype": "bfloat16",
        "bos_token_id": s["vocab_size"] - 2,
        "eos_token_id": s["vocab_size"] - 1,
    }


def ds_hf_config(s: dict) -> dict:
    return {
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "deepseek_v3",
        "vocab_size": s["vocab_size"],
        "hidden_size": s["hidden_size"],
        "intermediate_size": s["intermediate_size"],
        "moe_intermediate_size": s["moe_intermediate_size"],
        "num_hidden_layers": s["num_layers"],
        "num_attention_heads": s["num_heads"],
        "num_key_value_heads": s["num_heads"],
        "q_lora_rank": s["q_lora_rank"],
        "kv_lora_rank": s["kv_lora_rank"],
        "qk_nope_head_dim": s["qk_nope_head_dim"],
        "qk_rope_head_dim": s["qk_rope_head_dim"],
        "v_head_dim": s["v_head_dim"],
        "n_routed_experts": s["num_experts"],
        "n_shared_experts": s["n_shared_experts"],
        "num_experts_per_tok": s["num_experts_per_tok"],
        "n_group": s["n_group"],
        "topk_group": s["topk_group"],
        "topk_method": "noaux_tc",
        "scoring_func": "sigmoid",
        "norm_topk_prob": True,
        "routed_scaling_factor": s["routed_scaling_factor"],
        "first_k_dense_replace": s["first_k_dense"],
        "moe_layer_freq": 1,
        "num_nextn_predict_layers": 0,
        # llama.cpp's deepseek2 graph rotates adjacent pairs (its NORM rope): rope_interleave.
        "rope_interleave": True,
        "rope_scaling": None,
        "rms_norm_eps": RMS_EPS,
        "rope_theta": 10000.0,
        "max_position_embeddings": MAX_POS,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "hidden_act": "silu",
        "torch_dtype": "bfloat16",
        "bos_token_id": s["vocab_size"] - 2,
        "eos_token_id": s["vocab_size"] - 1,
    }


def ds_tensor_specs(s: dict):
    H, V, E = s["hidden_size"], s["vocab_size"], s["num_experts"]
    nh, ql, kl = s["num_heads"], s["q_lora_rank"], s["kv_lora_rank"]
    nope, rope, vd = s["qk_nope_head_dim"], s["qk_rope_head_dim"], s["v_head_dim"]
    I, Id, S = s["moe_intermediate_size"], s["intermediate_size"], s["moe_intermediate_size"] * s["n_shared_experts"]
    wstd = 1.0 / np.sqrt(H)
    out = [("model.embed_tokens.weight", (V, H), 1.0, 0.0)]
    for l in range(s["num_layers"]):
        p = f"model.layers.{l}."
        out += [
            (p + "input_layernorm.weight", (H,), 0.05, 1.0),
            (p + "post_attention_layernorm.weight", (H,), 0.05, 1.0),
            (p + "self_attn.q_a_proj.weight", (ql, H), wstd, 0.0),
            (p + "self_attn.q_a_layernorm.weight", (ql,), 0.05, 1.0),
            (p + "self_attn.q_b_proj.weight", (nh * (nope + rope), ql), 1.0 / np.sqrt(ql), 0.0),
            (p + "self_attn.kv_a_proj_with_mqa.weight", (kl + rope, H), wstd, 0.0),
            (p + "self_attn.kv_a_layernorm.weight", (kl,), 0.05, 1.0),
            (p + "self_attn.kv_b_proj.weight", (nh * (nope + vd), kl), 1.0 / np.sqrt(kl), 0.0),
            (p + "self_attn.o_proj.weight", (H, nh * vd), 1.0 / np.sqrt(nh * vd), 0.0),
        ]
        if l < s["first_k_dense"]:
            out += [(p + "mlp.gate_proj.weight", (Id, H), wstd, 0.0),
                    (p + "mlp.up_proj.weight", (Id, H), wstd, 0.0),
                    (p + "mlp.down_proj.weight", (H, Id), 1.0 / np.sqrt(Id), 0.0)]
            continue
        # The bias spreads choices by about the sigmoid scores' own spread, so it changes picks.
        out += [(p + "mlp.gate.weight", (E, H), 2.0 * wstd, 0.0),
                (p + "mlp.gate.e_score_correction_bias", (E,), 0.05, 0.0)]
        for e in range(E):
            ep = f"{p}mlp.experts.{e}."
            out += [(ep + "gate_proj.weight", (I, H), wstd, 0.0),
                    (ep + "up_proj.weight", (I, H), wstd, 0.0),
                    (ep + "down_proj.weight", (H, I), 1.0 / np.sqrt(I), 0.0)]
        out += [(p + "mlp.shared_experts.gate_proj.weight", (S, H), wstd, 0.0),
                (p + "mlp.shared_experts.up_proj.weight", (S, H), wstd, 0.0),
                (p + "mlp.shared_experts.down_proj.weight", (H, S), 1.0 / np.sqrt(S), 0.0)]
    out += [("model.norm.weight", (H,), 0.05, 1.0), ("lm_head.weight", (V, H), wstd, 0.0)]
    return out


def tensor_specs(s: dict):
    """(hf name, shape, std, mean) for every tensor, in file order."""
    if is_ds(s):
        return ds_tensor_specs(s)
    H, hd, V, I, E = s["hidden_size"], s["head_dim"], s["vocab_size"], s["moe_intermediate_size"], s["num_experts"]
    wstd = 1.0 / np.sqrt(H)
    out = [("model.embed_tokens.weight", (V, H), 1.0, 0.0)]
    for l in range(s["num_layers"]):
        p = f"model.layers.{l}."
        out += [
            (p + "input_layernorm.weight", (H,), 0.05, 1.0),
            (p + "post_attention_layernorm.weight", (H,), 0.05, 1.0),
            (p + "self_attn.q_proj.weight", (s["num_heads"] * hd, H), wstd, 0.0),
            (p + "self_attn.k_proj.weight", (s["num_kv_heads"] * hd, H), wstd, 0.0),
            (p + "self_attn.v_proj.weight", (s["num_kv_heads"] * hd, H), wstd, 0.0),
            (p + "self_attn.o_proj.weight", (H, s["num_heads"] * hd), 1.0 / np.sqrt(s["num_heads"] * hd), 0.0),
            (p + "self_attn.q_norm.weight", (hd,), 0.05, 1.0),
            (p + "self_attn.k_norm.weight", (hd,), 0.05, 1.0),
            (p + "mlp.gate.weight", (E, H), 2.0 * wstd, 0.0),
        ]
        for e in range(E):
            ep = f"{p}mlp.experts.{e}."
            out += [(ep + "gate_proj.weight", (I, H), wstd, 0.0),
                    (ep + "up_proj.weight", (I, H), wstd, 0.0),
                    (ep + "down_proj.weight", (H, I), 1.0 / np.sqrt(I), 0.0)]
    out += [("model.norm.weight", (H,), 0.05, 1.0), ("lm_head.weight", (V, H), wstd, 0.0)]
    return out


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bits (uint16), round to nearest even."""
    u = x.astype(np.float32).view(np.uint32)
    u = u + (np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))
    return (u >> np.uint32(16)).astype(np.uint16)


def bf16_bits_to_f32(b: np.ndarray) -> np.ndarray:
    return (b.astype(np.uint32) << np.uint32(16)).view(np.float32)


def random_tensor(seed: int, name: str, shape, std: float, mean: float) -> np.ndarray:
    # One generator per tensor (seeded by its name) so the values do not depend on write order.
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    x = rng.standard_normal(size=shape, dtype=np.float32)
    x *= np.float32(std)
    x += np.float32(mean)
    return to_bf16_bits(x)


def write_safetensors(path: Path, specs, seed: int) -> None:
    header, off = {}, 0
    for name, shape, _, _ in specs:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    header["__metadata__"] = {"format": "pt", "generator": "moeserve benchmarks/cpu_vs_llamacpp/make_models.py"}
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for name, shape, std, mean in specs:
            random_tensor(seed, name, shape, std, mean).tofile(f)
    os.replace(tmp, path)


class SafetensorsReader:
    def __init__(self, path: Path):
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            self.header = json.loads(f.read(n))
        self.base = 8 + n
        self.mm = np.memmap(path, dtype=np.uint8, mode="r")

    def bits(self, name: str) -> np.ndarray:
        h = self.header[name]
        b, e = h["data_offsets"]
        return self.mm[self.base + b:self.base + e].view(np.uint16).reshape(h["shape"])


def byte_tokens() -> list[str]:
    """GPT-2's byte-to-unicode table: the 256 single-byte tokens of a byte-level BPE vocab."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs))
    return [chr(table[b]) for b in range(256)]


def add_vocab(w, V: int) -> None:
    """A minimal byte-level BPE vocab: 256 byte tokens, padding tokens up to vocab_size, bos/eos
    as control tokens at the end. Benchmarks feed token ids directly, so it never tokenizes text."""
    import gguf
    toks = byte_tokens()
    toks += [f"<|pad_{i}|>" for i in range(V - 2 - len(toks))] + ["<|bos|>", "<|eos|>"]
    assert len(toks) == V, "vocab_size must be >= 258"
    types = [gguf.TokenType.NORMAL] * (V - 2) + [gguf.TokenType.CONTROL] * 2
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(toks)
    w.add_token_types(types)
    w.add_token_merges(["Ġ t"])
    w.add_bos_token_id(V - 2)
    w.add_eos_token_id(V - 1)
    w.add_add_bos_token(False)


def write_tensors(w, plan) -> None:
    """plan: (gguf name, numpy shape (out, in) order, producer, kind). kind True: BF16 (the
    producer gives bf16 bits), False: F32, "q8_0": llama.cpp's Q8_0 of the producer's bf16 bits
    (blocks of 32 along the rows, one f16 scale each). Shapes first (header), then the data one
    tensor at a time, so that a 10 GB model is never held in memory at once."""
    import gguf
    from gguf import quants
    q8 = gguf.GGMLQuantizationType.Q8_0
    for name, shape, _, kind in plan:
        n = int(np.prod(shape))
        if kind == "q8_0":
            byte_shape = tuple(shape[:-1]) + (shape[-1] // 32 * 34,)
            w.add_tensor_info(name, byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)), raw_dtype=q8)
        elif kind:
            w.add_tensor_info(name, shape, np.dtype(np.uint16), n * 2, raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            w.add_tensor_info(name, shape, np.dtype(np.float32), n * 4)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for name, shape, make, kind in plan:
        arr = np.ascontiguousarray(make())
        assert tuple(arr.shape) == tuple(shape), f"{name}: {arr.shape} != {shape}"
        if kind == "q8_0":
            arr = quants.quantize(bf16_bits_to_f32(arr), q8)
        w.write_tensor_data(arr)
    w.close()


def write_gguf_ds(path: Path, s: dict, st: SafetensorsReader, quant: str | None = None) -> None:
    """The DeepSeek-V3-shaped model as llama.cpp's deepseek2 architecture, with the keys and the
    kv_b split of its own converter (conversion/deepseek.py, DeepseekV2Model). quant "q8_0": the
    matrices of the layers in Q8_0 (those the FP8 checkpoints store in e4m3; the embedding and
    output stay BF16, the norms, router and bias F32)."""
    import gguf
    layer_mat = "q8_0" if quant == "q8_0" else True

    H, V, E, L = s["hidden_size"], s["vocab_size"], s["num_experts"], s["num_layers"]
    nh, kl = s["num_heads"], s["kv_lora_rank"]
    nope, rope, vd = s["qk_nope_head_dim"], s["qk_rope_head_dim"], s["v_head_dim"]
    w = gguf.GGUFWriter(str(path), "deepseek2")
    w.add_name("moeserve-random-deepseek2")
    w.add_block_count(L)
    w.add_context_length(MAX_POS)
    w.add_embedding_length(H)
    w.add_feed_forward_length(s["intermediate_size"])
    w.add_head_count(nh)
    w.add_head_count_kv(1)  # MLA runs as MQA over the latent in llama.cpp
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(RMS_EPS)
    w.add_vocab_size(V)
    w.add_leading_dense_block_count(s["first_k_dense"])
    w.add_q_lora_rank(s["q_lora_rank"])
    w.add_kv_lora_rank(kl)
    w.add_key_length(kl + rope)
    w.add_value_length(kl)
    w.add_key_length_mla(nope + rope)
    w.add_value_length_mla(vd)
    w.add_rope_dimension_count(rope)
    w.add_expert_feed_forward_length(s["moe_intermediate_size"])
    w.add_expert_count(E)
    w.add_expert_used_count(s["num_experts_per_tok"])
    w.add_expert_shared_count(s["n_shared_experts"])
    w.add_expert_weights_scale(s["routed_scaling_factor"])
    w.add_expert_weights_norm(True)
    w.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID)
    w.add_expert_group_count(s["n_group"])
    w.add_expert_group_used_count(s["topk_group"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if quant == "q8_0" else gguf.LlamaFileType.MOSTLY_BF16)
    add_vocab(w, V)

    def bits(n):
        return lambda: st.bits(n)

    def f32(n):
        return lambda: bf16_bits_to_f32(np.asarray(st.bits(n)))

    def kv_b(n, part):
        # [nh * (nope + vd), kl] -> k_b [nh, kl, nope] (transposed per head), v_b [nh, vd, kl]
        def make():
            kvb = np.asarray(st.bits(n)).reshape(nh, nope + vd, kl)
            return kvb[:, :nope, :].transpose(0, 2, 1) if part == "k" else kvb[:, nope:, :]
        return make

    def hf_shape(n):
        return tuple(st.header[n]["shape"])

    plan = [("token_embd.weight", hf_shape("model.embed_tokens.weight"), bits("model.embed_tokens.weight"), True)]
    for l in range(L):
        p, b = f"model.layers.{l}.", f"blk.{l}."

        def mat(g, n, p=p):
            return (b + g, hf_shape(p + n), bits(p + n), layer_mat)

        def vec(g, n, p=p):
            return (b + g, hf_shape(p + n), f32(p + n), False)

        plan += [
            vec("attn_norm.weight", "input_layernorm.weight"),
            mat("attn_q_a.weight", "self_attn.q_a_proj.weight"),
            vec("attn_q_a_norm.weight", "self_attn.q_a_layernorm.weight"),
            mat("attn_q_b.weight", "self_attn.q_b_proj.weight"),
            mat("attn_kv_a_mqa.weight", "self_attn.kv_a_proj_with_mqa.weight"),
            vec("attn_kv_a_norm.weight", "self_attn.kv_a_layernorm.weight"),
            (b + "attn_k_b.weight", (nh, kl, nope), kv_b(p + "self_attn.kv_b_proj.weight", "k"), layer_mat),
            (b + "attn_v_b.weight", (nh, vd, kl), kv_b(p + "self_attn.kv_b_proj.weight", "v"), layer_mat),
            mat("attn_output.weight", "self_attn.o_proj.weight"),
            vec("ffn_norm.weight", "post_attention_layernorm.weight"),
        ]
        if l < s["first_k_dense"]:
            plan += [mat("ffn_gate.weight", "mlp.gate_proj.weight"), mat("ffn_up.weight", "mlp.up_proj.weight"),
                     mat("ffn_down.weight", "mlp.down_proj.weight")]
            continue

        def stack(n, p=p):
            return lambda: np.stack([st.bits(f"{p}mlp.experts.{e}.{n}") for e in range(E)])

        I = s["moe_intermediate_size"]
        plan += [
            vec("ffn_gate_inp.weight", "mlp.gate.weight"),
            vec("exp_probs_b.bias", "mlp.gate.e_score_correction_bias"),
            (b + "ffn_gate_exps.weight", (E, I, H), stack("gate_proj.weight"), layer_mat),
            (b + "ffn_up_exps.weight", (E, I, H), stack("up_proj.weight"), layer_mat),
            (b + "ffn_down_exps.weight", (E, H, I), stack("down_proj.weight"), layer_mat),
            mat("ffn_gate_shexp.weight", "mlp.shared_experts.gate_proj.weight"),
            mat("ffn_up_shexp.weight", "mlp.shared_experts.up_proj.weight"),
            mat("ffn_down_shexp.weight", "mlp.shared_experts.down_proj.weight"),
        ]
    plan += [("output_norm.weight", (H,), f32("model.norm.weight"), False),
             ("output.weight", hf_shape("lm_head.weight"), bits("lm_head.weight"), True)]
    write_tensors(w, plan)


def write_safetensors_fp8(path: Path, st: SafetensorsReader, block=(128, 128)) -> None:
    """The bf16 file re-written in DeepSeek-V3's published FP8 layout by tests/reference/fp8_quant.py
    (the module the FP8 fixtures use): each layer matrix as float8_e4m3fn plus weight_scale_inv (f32
    per 128 x 128 block); the embedding, lm_head, norms, router and bias stay bf16."""
    import torch
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "reference"))
    from fp8_quant import is_fp8_weight, quantize_block_weight

    names = [n for n in st.header if n != "__metadata__"]
    header, off, fp8 = {}, 0, {}
    for name in names:
        shape = st.header[name]["shape"]
        fp8[name] = is_fp8_weight(name, torch.empty(shape, device="meta"))
        if fp8[name]:
            n, k = shape
            header[name] = {"dtype": "F8_E4M3", "shape": shape, "data_offsets": [off, off + n * k]}
            off += n * k
            sn, sk = -(-n // block[0]), -(-k // block[1])
            sname = name[: -len(".weight")] + ".weight_scale_inv"
            header[sname] = {"dtype": "F32", "shape": [sn, sk], "data_offsets": [off, off + sn * sk * 4]}
            off += sn * sk * 4
        else:
            nbytes = int(np.prod(shape)) * 2
            header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [off, off + nbytes]}
            off += nbytes
    header["__metadata__"] = {"format": "pt", "generator": "moeserve make_models.py --fp8"}
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for name in names:
            bits = np.asarray(st.bits(name))
            if fp8[name]:
                q, scale = quantize_block_weight(torch.from_numpy(bf16_bits_to_f32(bits)), block)
                f.write(q.view(torch.uint8).numpy().tobytes())
                f.write(scale.numpy().astype(np.float32).tobytes())
            else:
                bits.tofile(f)
    os.replace(tmp, path)


def write_gguf(path: Path, s: dict, st: SafetensorsReader) -> None:
    import gguf  # PyPI `gguf`, llama.cpp's own writer

    if is_ds(s):
        return write_gguf_ds(path, s, st)

    H, V, E, L = s["hidden_size"], s["vocab_size"], s["num_experts"], s["num_layers"]
    w = gguf.GGUFWriter(str(path), "qwen3moe")
    w.add_name("moeserve-random-qwen3moe")
    w.add_block_count(L)
    w.add_context_length(MAX_POS)
    w.add_embedding_length(H)
    w.add_feed_forward_length(s["moe_intermediate_size"] * 4)
    w.add_head_count(s["num_heads"])
    w.add_head_count_kv(s["num_kv_heads"])
    w.add_key_length(s["head_dim"])
    w.add_value_length(s["head_dim"])
    w.add_rope_freq_base(ROPE_THETA)
    w.add_layer_norm_rms_eps(RMS_EPS)
    w.add_expert_count(E)
    w.add_expert_used_count(s["num_experts_per_tok"])
    w.add_expert_feed_forward_length(s["moe_intermediate_size"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16)
    add_vocab(w, V)

    # (gguf name, producer of the numpy array). numpy shapes are (out, in) like HF; GGUF stores
    # dims reversed, which GGUFWriter does itself (ne0 = in features).
    bf16 = gguf.GGMLQuantizationType.BF16
    plan = [("token_embd.weight", lambda: st.bits("model.embed_tokens.weight"), True)]
    for l in range(L):
        p, b = f"model.layers.{l}.", f"blk.{l}."

        def one(n, p=p):
            return lambda: st.bits(p + n)

        def f32(n, p=p):
            return lambda: bf16_bits_to_f32(np.asarray(st.bits(p + n)))

        def stack(n, p=p):
            return lambda: np.stack([st.bits(f"{p}mlp.experts.{e}.{n}") for e in range(E)])

        plan += [
            (b + "attn_norm.weight", f32("input_layernorm.weight"), False),
            (b + "attn_q.weight", one("self_attn.q_proj.weight"), True),
            (b + "attn_k.weight", one("self_attn.k_proj.weight"), True),
            (b + "attn_v.weight", one("self_attn.v_proj.weight"), True),
            (b + "attn_output.weight", one("self_attn.o_proj.weight"), True),
            (b + "attn_q_norm.weight", f32("self_attn.q_norm.weight"), False),
            (b + "attn_k_norm.weight", f32("self_attn.k_norm.weight"), False),
            (b + "ffn_norm.weight", f32("post_attention_layernorm.weight"), False),
            (b + "ffn_gate_inp.weight", f32("mlp.gate.weight"), False),
            (b + "ffn_gate_exps.weight", stack("gate_proj.weight"), True),  # [E, I, H] -> ne [H, I, E]
            (b + "ffn_up_exps.weight", stack("up_proj.weight"), True),
            (b + "ffn_down_exps.weight", stack("down_proj.weight"), True),  # [E, H, I] -> ne [I, H, E]
        ]
    plan += [("output_norm.weight", lambda: bf16_bits_to_f32(np.asarray(st.bits("model.norm.weight"))), False),
             ("output.weight", lambda: st.bits("lm_head.weight"), True)]

    # Shapes first (header), then the data one tensor at a time, so that a 10 GB model is never
    # held in memory at once.
    hf_of = {"token_embd.weight": "model.embed_tokens.weight", "output.weight": "lm_head.weight",
             "output_norm.weight": "model.norm.weight"}
    for name, make, is_bf16 in plan:
        shape = shape_of(name, s, st, hf_of)
        n = int(np.prod(shape))
        if is_bf16:
            w.add_tensor_info(name, shape, np.dtype(np.uint16), n * 2, raw_dtype=bf16)
        else:
            w.add_tensor_info(name, shape, np.dtype(np.float32), n * 4)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for name, make, _ in plan:
        arr = np.ascontiguousarray(make())
        w.write_tensor_data(arr)
    w.close()


def shape_of(name: str, s: dict, st: SafetensorsReader, hf_of: dict):
    H, I, E, hd = s["hidden_size"], s["moe_intermediate_size"], s["num_experts"], s["head_dim"]
    if name in hf_of:
        return tuple(st.header[hf_of[name]]["shape"])
    kind = name.split(".")[2]
    return {
        "attn_norm": (H,), "ffn_norm": (H,), "attn_q_norm": (hd,), "attn_k_norm": (hd,),
        "attn_q": (s["num_heads"] * hd, H), "attn_k": (s["num_kv_heads"] * hd, H),
        "attn_v": (s["num_kv_heads"] * hd, H), "attn_output": (H, s["num_heads"] * hd),
        "ffn_gate_inp": (E, H), "ffn_gate_exps": (E, I, H), "ffn_up_exps": (E, I, H), "ffn_down_exps": (E, H, I),
    }[kind]


def expert_bytes_per_token(s: dict) -> int:
    """bf16 bytes of one token's top-k routed experts over all (MoE) layers."""
    moe_layers = s["num_layers"] - s.get("first_k_dense", 0)
    return 2 * moe_layers * s["num_experts_per_tok"] * 3 * s["moe_intermediate_size"] * s["hidden_size"]


def ds_attention_matrix_elems(s: dict) -> int:
    """One layer's MLA matrices that moeserve loads as matrices (q_a, q_b, kv_a, o_proj); kv_b
    is read as a plain tensor by the absorbed path and counted separately."""
    H, nh, rope = s["hidden_size"], s["num_heads"], s["qk_rope_head_dim"]
    qk = s["qk_nope_head_dim"] + rope
    return (H * s["q_lora_rank"] + s["q_lora_rank"] * nh * qk + H * (s["kv_lora_rank"] + rope) +
            nh * s["v_head_dim"] * H)


def matrix_bytes_per_token(s: dict) -> int:
    """bf16 bytes of the weight matrices one decode token reads: the attention projections, its
    top-k experts and lm_head (what moeserve keeps in the 12-bit form; not the router or norms).
    DeepSeek shapes add the dense layers' MLP and the shared experts (matrices too)."""
    H = s["hidden_size"]
    if is_ds(s):
        dense = s["first_k_dense"]
        shared = 3 * H * s["moe_intermediate_size"] * s["n_shared_experts"]
        mlp = dense * 3 * H * s["intermediate_size"] + (s["num_layers"] - dense) * shared
        return 2 * (s["num_layers"] * ds_attention_matrix_elems(s) + mlp + s["vocab_size"] * H) + \
            expert_bytes_per_token(s)
    hd = s["head_dim"]
    attn = H * hd * (2 * s["num_heads"] + 2 * s["num_kv_heads"])
    return 2 * (s["num_layers"] * attn + s["vocab_size"] * H) + expert_bytes_per_token(s)


def ds_layer_matrix_elems_per_token(s: dict) -> int:
    """Elements of the layer matrices one decode token reads (what the FP8 checkpoints store in
    e4m3 and the Q8_0 GGUF in Q8_0): MLA projections with kv_b, dense MLPs, shared and top-k experts."""
    H, dense = s["hidden_size"], s["first_k_dense"]
    moe_layers = s["num_layers"] - dense
    kv_b = s["num_heads"] * (s["qk_nope_head_dim"] + s["v_head_dim"]) * s["kv_lora_rank"]
    experts = moe_layers * (s["num_experts_per_tok"] + s["n_shared_experts"]) * 3 * H * s["moe_intermediate_size"]
    return s["num_layers"] * (ds_attention_matrix_elems(s) + kv_b) + dense * 3 * H * s["intermediate_size"] + experts


def active_weight_bytes_per_token(s: dict, fmt: str = "bf16") -> int:
    """Bytes of weights one decode token reads: the matrices above, the router and the norms;
    one embedding row (not the table). DeepSeek shapes: also kv_b_proj and the routing bias.
    fmt "fp8" / "q8_0" (DeepSeek shapes): the layer matrices at 1 byte plus one f32 scale per
    128 x 128 block (but kv_b_proj, which moeserve expands to bf16), or at Q8_0's 34 bytes per 32;
    lm_head stays bf16."""
    H = s["hidden_size"]
    if fmt != "bf16":
        elems = ds_layer_matrix_elems_per_token(s)
        if fmt == "fp8":  # moeserve expands kv_b_proj to bf16 at load (the absorbed path's head_gemm)
            elems -= s["num_layers"] * s["num_heads"] * (s["qk_nope_head_dim"] + s["v_head_dim"]) * s["kv_lora_rank"]
        per = {"fp8": 1.0 + 4.0 / (128 * 128), "q8_0": 34.0 / 32.0}[fmt]
        return int(active_weight_bytes_per_token(s) - 2 * elems + per * elems)
    if is_ds(s):
        moe_layers = s["num_layers"] - s["first_k_dense"]
        kv_b = s["num_heads"] * (s["qk_nope_head_dim"] + s["v_head_dim"]) * s["kv_lora_rank"]
        norms = 2 * H + s["q_lora_rank"] + s["kv_lora_rank"]
        rest = s["num_layers"] * (kv_b + norms) + moe_layers * (s["num_experts"] * H + s["num_experts"])
        return matrix_bytes_per_token(s) + 2 * (rest + H + H)
    hd = s["head_dim"]
    per_layer_rest = s["num_experts"] * H + 2 * H + 2 * hd  # router, two norms, q/k norms
    return matrix_bytes_per_token(s) + 2 * (s["num_layers"] * per_layer_rest + H + H)


def kv_bytes_per_token(s: dict, elem_bytes: int = 2) -> int:
    """KV cache bytes per token over all layers: the MLA latent and rope key for DeepSeek shapes,
    K and V of every KV head otherwise."""
    if is_ds(s):
        return elem_bytes * s["num_layers"] * (s["kv_lora_rank"] + s["qk_rope_head_dim"])
    return elem_bytes * s["num_layers"] * 2 * s["num_kv_heads"] * s["head_dim"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", required=True, choices=sorted(SHAPES))
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--force", action="store_true", help="rebuild even if the files exist")
    ap.add_argument("--fp8", action="store_true",
                    help="DeepSeek shapes: also DIR/hf-fp8 (FP8 e4m3 128x128 blocks) and DIR/model-q8_0.gguf")
    a = ap.parse_args()
    s = SHAPES[a.shape]
    if a.fp8 and not is_ds(s):
        ap.error("--fp8 is for the DeepSeek shapes (ds-*)")
    hf = a.out / "hf"
    gg = a.out / "model-bf16.gguf"
    meta_path = a.out / "shape.json"
    meta = {"shape": a.shape, "seed": a.seed, **s,
            "active_weight_bytes_per_token": active_weight_bytes_per_token(s),
            "kv_bytes_per_token_bf16": kv_bytes_per_token(s)}
    if not a.force and meta_path.exists() and gg.exists() and (hf / "model.safetensors").exists():
        if json.loads(meta_path.read_text()) == meta:
            print(f"{a.out}: up to date")
            if a.fp8:
                write_fp8_forms(a.out, s)
            return 0
    hf.mkdir(parents=True, exist_ok=True)
    (hf / "config.json").write_text(json.dumps(hf_config(s), indent=2) + "\n")
    specs = tensor_specs(s)
    print(f"writing {hf / 'model.safetensors'} ({sum(int(np.prod(x[1])) for x in specs) * 2 / 1e9:.2f} GB)", flush=True)
    write_safetensors(hf / "model.safetensors", specs, a.seed)
    print(f"writing {gg}", flush=True)
    tmp = gg.with_suffix(".tmp")
    write_gguf(tmp, s, SafetensorsReader(hf / "model.safetensors"))
    os.replace(tmp, gg)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    if a.fp8:
        write_fp8_forms(a.out, s)
    print("done")
    return 0


def write_fp8_forms(out: Path, s: dict) -> None:
    """DIR/hf-fp8/ (moeserve, the published FP8 layout) and DIR/model-q8_0.gguf (llama.cpp), both
    quantized from DIR/hf's bf16 bits; each is skipped when it exists."""
    st = SafetensorsReader(out / "hf" / "model.safetensors")
    fp8 = out / "hf-fp8"
    if not (fp8 / "model.safetensors").exists():
        fp8.mkdir(parents=True, exist_ok=True)
        cfg = hf_config(s)
        cfg["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                      "weight_block_size": [128, 128]}
        (fp8 / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        print(f"writing {fp8 / 'model.safetensors'}", flush=True)
        write_safetensors_fp8(fp8 / "model.safetensors", st)
    q8 = out / "model-q8_0.gguf"
    if not q8.exists():
        print(f"writing {q8}", flush=True)
        tmp = q8.with_suffix(".tmp")
        write_gguf_ds(tmp, s, st, quant="q8_0")
        os.replace(tmp, q8)


if __name__ == "__main__":
    sys.exit(main())
