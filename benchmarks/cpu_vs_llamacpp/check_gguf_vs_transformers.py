#!/usr/bin/env python3
"""Does llama.cpp read our DeepSeek-shaped GGUF as the model transformers reads from the safetensors?

    check_gguf_vs_transformers.py [--shape ds-tiny] [--models-dir /tmp/moeserve_cpu_vs_llamacpp]

Logits of a 16-token prompt from transformers (DeepseekV3ForCausalLM, f32 on the bf16 weights)
and from llama.cpp (the GGUF make_models.py wrote from the same bits). Then the same with two
deliberately wrong GGUFs (no expert groups; the routing bias zeroed) to show that the comparison
notices a routing mistake. Exits 1 when the real GGUF disagrees (argmax differs anywhere, or a
logit differs by more than --tol) or a wrong one passes.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import make_models as mm
from run import Llama, token


def compare(model_dir: Path, gguf: Path, n: int = 16):
    import torch
    from transformers import AutoModelForCausalLM
    cfg = json.loads((model_dir / "config.json").read_text())
    ids = [token(i, cfg["vocab_size"]) for i in range(n)]
    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        hf = m(torch.tensor([ids])).logits[0].numpy()
    ll = Llama(str(gguf), 2, 256, 64, 1).decode([(t, i, 0, True) for i, t in enumerate(ids)]).copy()
    return int((hf.argmax(1) == ll.argmax(1)).sum()), float(np.abs(hf - ll).max()), float(hf.std())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="ds-tiny", choices=[k for k, v in mm.SHAPES.items() if mm.is_ds(v)])
    ap.add_argument("--models-dir", type=Path, default=Path("/tmp/moeserve_cpu_vs_llamacpp"))
    ap.add_argument("--tol", type=float, default=0.1, help="max |logit diff| (bf16 products in llama.cpp)")
    a = ap.parse_args()
    d = a.models_dir / a.shape
    mm_args = [sys.executable, str(Path(__file__).with_name("make_models.py")), "--shape", a.shape, "--out", str(d)]
    subprocess.run(mm_args, check=True)
    ok = True
    agree, diff, std = compare(d / "hf", d / "model-bf16.gguf")
    print(f"{a.shape}: argmax agrees on {agree}/16, max |logit diff| {diff:.4f} (logit std {std:.3f})")
    ok &= agree == 16 and diff <= a.tol
    st = mm.SafetensorsReader(d / "hf" / "model.safetensors")
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("no expert groups", "routing bias zeroed"):
            s = dict(mm.SHAPES[a.shape])
            reader = st
            if name == "no expert groups":
                s.update(n_group=1, topk_group=1)
            else:
                reader = mm.SafetensorsReader(d / "hf" / "model.safetensors")
                orig = reader.bits
                reader.bits = lambda n, orig=orig: orig(n) * 0 if n.endswith("e_score_correction_bias") else orig(n)
            wrong = Path(tmp) / "wrong.gguf"
            mm.write_gguf(wrong, s, reader)
            agree_w, diff_w, _ = compare(d / "hf", wrong)
            print(f"  wrong GGUF ({name}): argmax agrees on {agree_w}/16, max |logit diff| {diff_w:.4f}")
            ok &= not (agree_w == 16 and diff_w <= a.tol)
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
