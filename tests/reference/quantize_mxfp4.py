#!/usr/bin/env python3
"""MXFP4 as gpt-oss checkpoints publish it, for fixtures (#24).

Importable helpers:
  quantize_mxfp4(w)            w [..., k] (k % 32 == 0) -> (blocks u8 [..., k/32, 16], scales u8 [..., k/32])
  dequantize_mxfp4(b, s)       the inverse map to f32 [..., k] (as transformers' convert_moe_packed_tensors)
  quantize_experts(state)      a GptOssForCausalLM state dict's experts -> the published tensors:
                                 model.layers.N.mlp.experts.gate_up_proj_blocks [E, 2I, H/32, 16] + _scales [E, 2I, H/32]
                                 model.layers.N.mlp.experts.down_proj_blocks    [E, H, I/32, 16]  + _scales [E, H, I/32]
                               (rows are output features: gate_up's rows interleave gate and up, 0::2 and 1::2,
                               as the bf16 model's gate_up_proj[..., ::2] / [..., 1::2]); biases stay as they are.
  write_mxfp4_fixture(...)     a tiny GptOssForCausalLM with its experts in those tensors (config.json carries
                               quantization_config {"quant_method": "mxfp4", "modules_to_not_convert": [...]}),
                               and reference logits from transformers on the DEQUANTIZED weights: the model's
                               expert parameters are replaced by dequantize(quantize(w)) before the reference runs,
                               so the MXFP4 files and the reference describe exactly the same function.
                               experts_dequantized.safetensors: layer 0's gate, up and down [E, out, in] f32 as
                               transformers' dequantizer and gate/up split give them (for the C++ loader test).

Encoding (OCP MX v1.0): per block of 32, the shared exponent is floor(log2(amax)) - 2 (e2m1's largest value is
6 = 1.5 * 2^2), stored as e8m0 = exponent + 127 clamped to [0, 254]; each value / 2^exponent is rounded to the
nearest e2m1 value (ties to even code), saturating at +-6. An all-zero block gets scale 127.

The non-expert tensors stay f32 in the fixture (the published checkpoints hold them in bf16): the f32 fixture
lets the C++ test compare with the reference at f32 precision everywhere but the expert products.

    python3 tests/reference/quantize_mxfp4.py                 # writes fixtures_quant/gpt_oss_mxfp4/
    python3 tests/reference/quantize_mxfp4.py --check DIR     # transformers' MXFP4 dequantizer on DIR's experts
                                                              # must give our weights bit for bit
The output is deterministic.
"""
import json
import os
import shutil
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])


def quantize_mxfp4(w):
    """w [..., k] float -> (blocks u8 [..., k/32, 16], scales u8 [..., k/32])."""
    w = w.detach().to(torch.float32)
    *lead, k = w.shape
    if k % 32 != 0:
        raise ValueError(f"MXFP4 needs the last dimension ({k}) to be a multiple of 32")
    blocks = w.reshape(*lead, k // 32, 32)
    amax = blocks.abs().amax(dim=-1)
    # floor(log2(amax)) exactly, from the float's exponent (frexp: amax = m * 2^e, m in [0.5, 1)).
    _, e = torch.frexp(amax)
    shared = torch.where(amax > 0, e.to(torch.int32) - 1 - 2, torch.zeros_like(e, dtype=torch.int32))
    scale_u8 = (shared + 127).clamp(0, 254)
    shared = scale_u8 - 127
    scaled = blocks / torch.ldexp(torch.ones_like(amax), shared.to(torch.float32)).unsqueeze(-1)
    # Nearest e2m1 magnitude, ties to the even code (codes are monotone in magnitude).
    mags = E2M1[:8]
    dist = (scaled.abs().unsqueeze(-1) - mags).abs()
    best = dist.min(dim=-1, keepdim=True).values
    ties = dist == best
    codes_idx = torch.arange(8)
    # among the tied codes, the even one (at most two can tie: neighbours)
    pref = torch.where(ties, (codes_idx % 2) * 8 + codes_idx, torch.full_like(codes_idx, 100))
    mag_code = pref.argmin(dim=-1)
    sign = (scaled < 0) | ((scaled == 0) & torch.signbit(scaled))
    code = (mag_code | (sign.to(torch.int64) << 3)).to(torch.uint8)
    lo, hi = code[..., 0::2], code[..., 1::2]
    packed = (lo | (hi << 4)).to(torch.uint8)
    return packed.contiguous(), scale_u8.to(torch.uint8).contiguous()


def dequantize_mxfp4(blocks, scales):
    """blocks u8 [..., G, 16], scales u8 [..., G] -> f32 [..., G * 32]."""
    lo = (blocks & 0x0F).to(torch.long)
    hi = (blocks >> 4).to(torch.long)
    vals = torch.stack([E2M1[lo], E2M1[hi]], dim=-1).reshape(*blocks.shape[:-1], 32)
    out = torch.ldexp(vals, (scales.to(torch.int32) - 127).to(torch.float32).unsqueeze(-1))
    return out.reshape(*blocks.shape[:-2], blocks.shape[-2] * 32)


def quantize_experts(state):
    """Replaces every expert gate_up_proj / down_proj in a GptOss state dict by its blocks and scales.

    Returns (new state dict, dequantized experts {name: tensor in the bf16 model's layout}).
    """
    out, deq = {}, {}
    for name, t in state.items():
        if name.endswith("mlp.experts.gate_up_proj") or name.endswith("mlp.experts.down_proj"):
            rows_major = t.transpose(1, 2).contiguous()  # [E, out features, in features]
            b, s = quantize_mxfp4(rows_major)
            out[name + "_blocks"] = b
            out[name + "_scales"] = s
            deq[name] = dequantize_mxfp4(b, s).transpose(1, 2).contiguous()
        else:
            out[name] = t
    return out, deq


def tiny_config():
    from transformers import GptOssConfig

    vocab = 320
    return GptOssConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2, head_dim=16,
        num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
        sliding_window=8, layer_types=["sliding_attention", "full_attention"], max_position_embeddings=256,
        rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
        rope_scaling={"rope_type": "yarn", "factor": 4.0, "beta_fast": 32.0, "beta_slow": 1.0,
                      "truncate": False, "original_max_position_embeddings": 64},
        bos_token_id=vocab - 3, eos_token_id=vocab - 2, pad_token_id=vocab - 1)


MODULES_NOT_CONVERTED = ["model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]


# The C++ side's expert products round activations to bf16 (as for bf16 weights), which moves logits by ~1e-3:
# greedy steps closer than this would make "greedy identical" a coin toss, so such seeds are redrawn.
MIN_GREEDY_GAP = 0.02


def write_mxfp4_fixture(out_dir, seed=2424, model=None, tries=20):
    """Writes the MXFP4 fixture for `model` (a GptOssForCausalLM, f32), or a tiny random one whose greedy steps
    all have a top-2 gap of at least MIN_GREEDY_GAP (the first such seed from `seed` on)."""
    if model is None:
        for attempt in range(tries):
            deq = _write(out_dir, seed + attempt, None)
            if deq is not None:
                return deq
        raise SystemExit(f"no seed in {tries} tries gave greedy gaps >= {MIN_GREEDY_GAP}")
    return _write(out_dir, seed, model, require_gap=False)


def _write(out_dir, seed, model, require_gap=True):
    import transformers
    from safetensors.torch import save_file
    from transformers import GptOssForCausalLM

    import make_fixtures as mf

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    if model is None:
        cfg = tiny_config()
        cfg._attn_implementation = "eager"
        torch.manual_seed(seed)
        model = GptOssForCausalLM(cfg).to(torch.float32)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in sorted(model.named_parameters()):
                if name.endswith("norm.weight"):
                    v = 1.0 + 0.1 * torch.randn(p.shape, generator=gen)
                elif name.endswith("router.weight"):
                    v = 0.5 * torch.randn(p.shape, generator=gen)
                elif name.endswith("sinks"):
                    v = 0.5 * torch.randn(p.shape, generator=gen)
                elif name.endswith("bias"):
                    v = 0.05 * torch.randn(p.shape, generator=gen)
                elif name == "model.embed_tokens.weight":
                    v = 0.5 * torch.randn(p.shape, generator=gen)
                elif name == "lm_head.weight":
                    v = 0.15 * torch.randn(p.shape, generator=gen)
                else:
                    v = 0.08 * torch.randn(p.shape, generator=gen)
                p.copy_(v)
        model.eval()
    else:
        gen = torch.Generator().manual_seed(seed)
    cfg = model.config
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    qstate, deq = quantize_experts(state)
    # The reference runs on exactly the weights the MXFP4 tensors hold.
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, t in deq.items():
            params[name].copy_(t)
    prompts = mf.make_prompts(cfg.vocab_size, {cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id}, gen)
    tensors, greedy, problems = mf.run_reference(model, cfg, prompts)
    gaps = []
    for i in range(len(prompts)):
        top2 = tensors[f"greedy_logits.{i}"].topk(2, dim=-1).values
        gaps.append(float((top2[:, 0] - top2[:, 1]).min()))
    if problems or (require_gap and min(gaps) < MIN_GREEDY_GAP):
        print(f"  seed {seed} rejected: min greedy gap {min(gaps):.4f}; " + "; ".join(problems))
        return None

    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    conf = cfg.to_dict()
    conf["architectures"] = ["GptOssForCausalLM"]
    conf["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": MODULES_NOT_CONVERTED}
    conf.pop("_attn_implementation_autoset", None)
    conf["dtype"] = "float32"
    with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(conf, f, indent=2, sort_keys=True)
        f.write("\n")
    save_file({k: v.contiguous() for k, v in sorted(qstate.items())}, os.path.join(out_dir, "model.safetensors"),
              metadata={"format": "pt"})
    save_file(tensors, os.path.join(out_dir, "reference.safetensors"), metadata={"format": "pt"})
    # Layer 0's experts as transformers' own dequantizer gives them, split as modeling_gpt_oss splits them
    # (gate = gate_up[..., ::2], up = gate_up[..., 1::2]), rows = output features: what the C++ loader's
    # gate / up / down matrices must hold.
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    pre = "model.layers.0.mlp.experts."
    gu = convert_moe_packed_tensors(qstate[pre + "gate_up_proj_blocks"], qstate[pre + "gate_up_proj_scales"],
                                    dtype=torch.float32)  # [E, H, 2I]
    dn = convert_moe_packed_tensors(qstate[pre + "down_proj_blocks"], qstate[pre + "down_proj_scales"],
                                    dtype=torch.float32)  # [E, I, H]
    save_file({"layers.0.gate": gu[..., ::2].transpose(1, 2).contiguous(),
               "layers.0.up": gu[..., 1::2].transpose(1, 2).contiguous(),
               "layers.0.down": dn.transpose(1, 2).contiguous()},
              os.path.join(out_dir, "experts_dequantized.safetensors"), metadata={"format": "pt"})
    expert_weights = sum(t.numel() * 2 for n, t in qstate.items() if n.endswith("_blocks"))
    ref = {
        "family": "GptOssForCausalLM",
        "dtype": "float32",
        "quantization": "mxfp4 experts; reference on the dequantized weights",
        "expert_weights": expert_weights,
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
    print(f"  wrote {os.path.relpath(out_dir, HERE)}: {len(qstate)} tensors, {expert_weights} MXFP4 expert weights")
    return deq


def check_with_transformers(out_dir, deq=None):
    """transformers' own MXFP4 dequantizer (integrations.mxfp4.convert_moe_packed_tensors, what its loader runs
    when it dequantizes a published checkpoint) must turn our blocks and scales into the same expert weights, in
    the bf16 model's layout ([E, in, out]), bit for bit."""
    from safetensors.torch import load_file
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    st = load_file(os.path.join(out_dir, "model.safetensors"))
    checked = 0
    for name in sorted(st):
        if not name.endswith("_blocks"):
            continue
        base = name[: -len("_blocks")]
        theirs = convert_moe_packed_tensors(st[name], st[base + "_scales"], dtype=torch.float32)
        ours = dequantize_mxfp4(st[name], st[base + "_scales"]).transpose(1, 2)
        if not torch.equal(theirs, ours):
            raise SystemExit(f"{base}: transformers dequantizes our MXFP4 tensors differently")
        if deq is not None and not torch.equal(ours, deq[base]):
            raise SystemExit(f"{base}: differs from the weights the reference ran on")
        checked += 1
    if checked == 0:
        raise SystemExit("no MXFP4 expert tensors in " + out_dir)
    print(f"  transformers' dequantizer reads the same {checked} expert tensors from {out_dir}")


def main(argv):
    if len(argv) == 3 and argv[1] == "--check":
        check_with_transformers(argv[2])
        return
    # Not under fixtures/: the tests that walk every fixture there compare at f32 tolerances.
    out_dir = os.path.join(HERE, "fixtures_quant", "gpt_oss_mxfp4")
    deq = write_mxfp4_fixture(out_dir)
    check_with_transformers(out_dir, deq)


if __name__ == "__main__":
    main(sys.argv)
