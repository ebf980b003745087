#!/usr/bin/env python3
"""Builds one random-weight Qwen3-MoE model and writes it for both engines of issue 6.

    make_models.py --shape moe-s|qwen3-a3b-8L|tiny --out DIR [--seed 1234]

DIR/hf/    config.json + model.safetensors (Hugging Face names, bf16): what `moeserve` loads.
DIR/model-bf16.gguf  the same numbers for llama.cpp (architecture qwen3moe, BF16 matrices;
           1-D norms and the router in F32, which holds every bf16 value exactly).

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
}

ROPE_THETA = 1000000.0
RMS_EPS = 1e-6
MAX_POS = 4096


def hf_config(s: dict) -> dict:
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


def tensor_specs(s: dict):
    """(hf name, shape, std, mean) for every tensor, in file order."""
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


def write_gguf(path: Path, s: dict, st: SafetensorsReader) -> None:
    import gguf  # PyPI `gguf`, llama.cpp's own writer

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
    # A minimal byte-level BPE vocab: 256 byte tokens, padding tokens up to vocab_size, bos/eos
    # as control tokens at the end. Benchmarks feed token ids directly, so it never tokenizes text.
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
    """bf16 bytes of one token's top-k experts over all layers."""
    return 2 * s["num_layers"] * s["num_experts_per_tok"] * 3 * s["moe_intermediate_size"] * s["hidden_size"]


def matrix_bytes_per_token(s: dict) -> int:
    """bf16 bytes of the weight matrices one decode token reads: the attention projections, its
    top-k experts and lm_head (what moeserve keeps in the 12-bit form; not the router or norms)."""
    H, hd = s["hidden_size"], s["head_dim"]
    attn = H * hd * (2 * s["num_heads"] + 2 * s["num_kv_heads"])
    return 2 * (s["num_layers"] * attn + s["vocab_size"] * H) + expert_bytes_per_token(s)


def active_weight_bytes_per_token(s: dict) -> int:
    """Bytes of bf16 weights one decode token reads: the matrices above, the router and the norms;
    one embedding row (not the table)."""
    H, hd = s["hidden_size"], s["head_dim"]
    per_layer_rest = s["num_experts"] * H + 2 * H + 2 * hd  # router, two norms, q/k norms
    return matrix_bytes_per_token(s) + 2 * (s["num_layers"] * per_layer_rest + H + H)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", required=True, choices=sorted(SHAPES))
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--force", action="store_true", help="rebuild even if the files exist")
    a = ap.parse_args()
    s = SHAPES[a.shape]
    hf = a.out / "hf"
    gg = a.out / "model-bf16.gguf"
    meta_path = a.out / "shape.json"
    meta = {"shape": a.shape, "seed": a.seed, **s,
            "active_weight_bytes_per_token": active_weight_bytes_per_token(s)}
    if not a.force and meta_path.exists() and gg.exists() and (hf / "model.safetensors").exists():
        if json.loads(meta_path.read_text()) == meta:
            print(f"{a.out}: up to date")
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
    print("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
