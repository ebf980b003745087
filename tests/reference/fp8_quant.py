#!/usr/bin/env python3
"""FP8 e4m3 block quantization in the layout DeepSeek-V3/R1 and Kimi K2 publish (#20).

Each quantized linear weight `X.weight` [n, k] becomes

  X.weight            float8_e4m3fn [n, k]
  X.weight_scale_inv  float32 [ceil(n / bn), ceil(k / bk)]

with w[i, j] ~= float(X.weight[i, j]) * X.weight_scale_inv[i // bn, j // bk] (the name says "inv"
because it is the inverse of the scale the values were multiplied by). Each block's scale is its
largest magnitude over 448 (e4m3's largest finite value), so the block's largest weight maps to
+-448; an all-zero block gets scale 1. Blocks at the right and bottom edges are partial when n or k
is not a multiple of the block.

Which weights: every 2-D `.weight` under `model.layers.` except norms and the MoE router
(`mlp.gate.weight`), as in the published checkpoints; the embedding, the norms, the router, its
e_score_correction_bias and lm_head stay as they are. The config gets

  "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                          "weight_block_size": [bn, bk]}

Use as a module:
    from fp8_quant import quantize_fp8_blocks, dequantize_fp8_blocks, quantization_config
    q = quantize_fp8_blocks(model.state_dict(), (128, 128))    # new dict; the input is not changed
    w = dequantize_fp8_blocks(q, (128, 128))                    # f32 weights as the FP8 files hold them
"""
import torch

E4M3_MAX = 448.0


def is_fp8_weight(name, tensor):
    """True for the weights a published DeepSeek-V3 FP8 checkpoint stores in e4m3."""
    if not name.startswith("model.layers.") or not name.endswith(".weight") or tensor.dim() != 2:
        return False
    if name.endswith("norm.weight"):
        return False
    if name.endswith(".mlp.gate.weight"):  # the router (not mlp.gate_proj)
        return False
    return True


def quantize_block_weight(w, block):
    """w: 2-D float tensor; block: (bn, bk). Returns (e4m3 values [n, k], f32 scale_inv [sn, sk])."""
    bn, bk = int(block[0]), int(block[1])
    if bn <= 0 or bk <= 0:
        raise ValueError(f"block {block} must be positive")
    w = w.detach().to(torch.float32)
    n, k = w.shape
    sn, sk = -(-n // bn), -(-k // bk)
    padded = torch.zeros(sn * bn, sk * bk, dtype=torch.float32)
    padded[:n, :k] = w
    blocks = padded.reshape(sn, bn, sk, bk)
    amax = blocks.abs().amax(dim=(1, 3))  # [sn, sk]
    scale = torch.where(amax > 0, amax / E4M3_MAX, torch.ones_like(amax))
    q = (blocks / scale[:, None, :, None]).clamp(-E4M3_MAX, E4M3_MAX)
    q = q.reshape(sn * bn, sk * bk)[:n, :k].contiguous().to(torch.float8_e4m3fn)
    return q, scale.contiguous()


def dequantize_block_weight(q, scale_inv, block):
    """The f32 weight an FP8 (values, weight_scale_inv) pair with blocks (bn, bk) stands for."""
    n, k = q.shape
    bn, bk = int(block[0]), int(block[1])
    if tuple(scale_inv.shape) != (-(-n // bn), -(-k // bk)):
        raise ValueError(f"scale_inv {tuple(scale_inv.shape)} does not fit [{n}, {k}] in blocks of {block}")
    s = scale_inv.to(torch.float32).repeat_interleave(bn, dim=0).repeat_interleave(bk, dim=1)[:n, :k]
    return q.to(torch.float32) * s


def quantize_fp8_blocks(state_dict, block=(128, 128)):
    """Returns a new state dict in the published FP8 layout (see the module docstring)."""
    out = {}
    for name, t in state_dict.items():
        if is_fp8_weight(name, t):
            q, s = quantize_block_weight(t, block)
            out[name] = q
            out[name[: -len(".weight")] + ".weight_scale_inv"] = s
        else:
            out[name] = t
    return out


def dequantize_fp8_blocks(state_dict, block=(128, 128)):
    """Inverse layout: every (X.weight e4m3, X.weight_scale_inv) pair becomes an f32 X.weight."""
    out = {}
    for name, t in state_dict.items():
        if name.endswith(".weight_scale_inv"):
            continue
        if t.dtype == torch.float8_e4m3fn:
            s = state_dict[name[: -len(".weight")] + ".weight_scale_inv"]
            out[name] = dequantize_block_weight(t, s, block)
        else:
            out[name] = t
    return out


def quantization_config(block=(128, 128)):
    """The config.json entry the published checkpoints carry."""
    return {
        "activation_scheme": "dynamic",
        "fmt": "e4m3",
        "quant_method": "fp8",
        "weight_block_size": [int(block[0]), int(block[1])],
    }


def _self_check():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(200, 300, generator=gen)
    w[:, :5] = 0.0
    q, s = quantize_block_weight(w, (128, 128))
    assert q.dtype == torch.float8_e4m3fn and tuple(q.shape) == (200, 300)
    assert tuple(s.shape) == (2, 3), s.shape
    back = dequantize_block_weight(q, s, (128, 128))
    # e4m3 has 3 mantissa bits: an element's error is at most half a step, 2^-4 of its magnitude
    # (or of the subnormal step, 2^-9 * 448 / 448 of the block's largest).
    err = ((back - w).abs() - w.abs() / 16).max().item()
    assert err <= w.abs().max().item() * 2**-10, err
    err = (back - w).abs().max().item()
    assert back.abs().max().item() <= w.abs().max().item() * (1 + 2**-4)
    print(f"fp8_quant self-check: max abs error {err:.4g} for max |w| {w.abs().max().item():.3g}")


if __name__ == "__main__":
    _self_check()
