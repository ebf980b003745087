#!/usr/bin/env python3
"""Expert parallelism on CPUs: EP1 (one process, 2 threads) against EP2 (`mpirun -np 2`, one
thread per rank) on the same random-weight model, and a labelled projection to DeepSeek-V3.

    run.py --moeserve build/release/src/cli/moeserve --model DIR --out results.json
    run.py ... --make-model moe-s      (writes DIR/hf from benchmarks/cpu_vs_llamacpp/make_models.py)

Cases (greedy, --ignore-eos, every run a fresh process):
  decode_1     1 sequence: 16 prompt tokens, 33 generated; decode tokens/s
  decode_16    16 sequences of 16 prompt tokens, 17 generated each; aggregate decode tokens/s
               (the sum over sequences, which step together); EP2 puts 8 on each rank
  prefill_512  1 prompt of 512 tokens, 2 generated; prompt tokens/s. Under EP2 rank 1 has no
               request: it joins every step with zero rows and serves its half of the experts
From rank 0's log line under EP2: bytes sent to the other rank per token per MoE layer
(dispatch + combine) and the wall time inside dispatch + combine (which includes waiting for
the peer to arrive at the collective).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STATS_RE = re.compile(r"expert parallelism, rank 0: (\d+) MoE layer calls, ([0-9.]+) bytes per token per MoE layer, "
                      r"dispatch\+combine ([0-9.]+) s")
MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", "2"]

# DeepSeek-V3 (config.json of deepseek-ai/DeepSeek-V3): hidden 7168, 8 routed experts per token,
# 61 layers of which the first 3 are dense.
DSV3 = dict(hidden=7168, top_k=8, moe_layers=58)
NVLINK_GBPS_PER_DIR = 900 / 2  # H100 SXM NVLink 4: 900 GB/s per GPU, both directions together
IB_GBPS_PER_DIR = 400 / 8      # 400 Gb/s InfiniBand NDR per GPU, per direction


def prompt(n: int, vocab: int, rng: random.Random) -> str:
    return ",".join(str(rng.randrange(10, vocab)) for _ in range(n))


def run_case(cmd: list[str], env: dict, timeout: float) -> tuple[list[dict], dict | None, float]:
    t0 = time.monotonic()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        sys.stderr.write(p.stdout + p.stderr)
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}")
    outs = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    m = STATS_RE.search(p.stderr)
    stats = None
    if m:
        stats = dict(moe_layer_calls=int(m.group(1)), bytes_per_token_layer=float(m.group(2)),
                     exchange_seconds=float(m.group(3)))
    return outs, stats, wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moeserve", required=True)
    ap.add_argument("--model", required=True, type=Path, help="model root (DIR/hf holds config.json)")
    ap.add_argument("--make-model", choices=["moe-s", "tiny"], help="write DIR/hf first with make_models.py")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--timeout", type=float, default=1800)
    a = ap.parse_args()

    hf = a.model / "hf"
    if a.make_model and not (hf / "model.safetensors").exists():
        sys.path.insert(0, str(HERE.parent / "cpu_vs_llamacpp"))
        import make_models as mm  # noqa: E402
        s = mm.SHAPES[a.make_model]
        hf.mkdir(parents=True, exist_ok=True)
        (hf / "config.json").write_text(json.dumps(mm.hf_config(s), indent=2) + "\n")
        mm.write_safetensors(hf / "model.safetensors", mm.tensor_specs(s), 1234)
    cfg = json.loads((hf / "config.json").read_text())
    vocab, hidden, top_k = cfg["vocab_size"], cfg["hidden_size"], cfg["num_experts_per_tok"]

    rng = random.Random(a.seed)
    cases = {
        "decode_1": ([prompt(16, vocab, rng)], 33),
        "decode_16": ([prompt(16, vocab, rng) for _ in range(16)], 17),
        "prefill_512": ([prompt(512, vocab, rng)], 2),
    }
    env = dict(os.environ, OMPI_MCA_btl_vader_single_copy_mechanism="none", OMP_NUM_THREADS="1",
               MOESERVE_LOG_LEVEL="info")
    base = [a.moeserve, "run", "--model", str(hf), "--json", "--ignore-eos"]
    configs = {
        "EP1": lambda extra: base + ["--threads", "2"] + extra,
        "EP2": lambda extra: MPIRUN + base + ["--expert-parallel", "--threads", "1"] + extra,
    }
    results = {}
    for name, (prompts, max_tokens) in cases.items():
        extra = ["--max-tokens", str(max_tokens)]
        for p in prompts:
            extra += ["--prompt-ids", p]
        for cname, make in configs.items():
            outs, stats, wall = run_case(make(extra), env, a.timeout)
            assert len(outs) == len(prompts), (name, cname, len(outs))
            r = dict(wall_seconds=round(wall, 2))
            if name.startswith("decode"):
                r["decode_tokens_per_second"] = round(sum(o["decode_tokens_per_second"] for o in outs), 2)
            else:
                r["prefill_tokens_per_second"] = round(outs[0]["prompt_tokens"] / outs[0]["prefill_seconds"], 1)
            if stats:
                r.update(stats)
                r["exchange_ms_per_moe_layer_call"] = round(1e3 * stats["exchange_seconds"] / stats["moe_layer_calls"], 3)
            r["ids"] = [o["ids"] for o in outs]
            results.setdefault(name, {})[cname] = r
            print(f"{name:12s} {cname}: {json.dumps({k: v for k, v in r.items() if k != 'ids'})}", flush=True)
        # EP changes where experts run, never what they compute: the greedy tokens must agree.
        results[name]["same_tokens"] = results[name]["EP1"]["ids"] == results[name]["EP2"]["ids"]
        for c in configs:
            del results[name][c]["ids"]

    # Bytes per routed row per hidden element, from decode_16 (the steady state): what the wire
    # format costs, independent of the model's width.
    st = results["decode_16"]["EP2"]
    per_elem = st["bytes_per_token_layer"] / (top_k * hidden)
    # Under EP2 with contiguous ranges a row leaves its rank with probability 1/2; on N ranks,
    # (N-1)/N. Scale to the remote share of each projected layout.
    per_elem_all_remote = per_elem / 0.5
    proj = []
    for gpus, nodes in ((8, 1), (16, 2)):
        remote = (gpus - 1) / gpus
        bytes_tok_layer = per_elem_all_remote * remote * DSV3["top_k"] * DSV3["hidden"]
        # Of a GPU's remote traffic, the share to GPUs of another node crosses InfiniBand.
        other_node = (gpus - gpus // nodes) / (gpus - 1)
        for tokens_per_gpu in (1, 16, 64, 128):
            b = bytes_tok_layer * DSV3["moe_layers"] * tokens_per_gpu
            t_nv = b * (1 - other_node) / (NVLINK_GBPS_PER_DIR * 1e9)
            t_ib = b * other_node / (IB_GBPS_PER_DIR * 1e9)
            t = max(t_nv, t_ib)
            proj.append(dict(gpus=gpus, nodes=nodes, tokens_per_gpu_per_step=tokens_per_gpu,
                             bytes_per_token_per_moe_layer=round(bytes_tok_layer),
                             bytes_per_gpu_per_step=round(b), comm_ms_per_step=round(t * 1e3, 3),
                             comm_bound_tokens_per_second_per_gpu=round(tokens_per_gpu / t)))
    out = {
        "what": "EP1 (1 process, 2 threads) vs EP2 (mpirun -np 2, 1 thread each), moeserve run, greedy",
        "machine": {"cpu": subprocess.run(["lscpu"], capture_output=True, text=True).stdout.split("Model name:")[1]
                    .splitlines()[0].strip() if "Model name:" in subprocess.run(["lscpu"], capture_output=True,
                                                                              text=True).stdout else platform.processor(),
                    "nproc": os.cpu_count(),
                    "note": "2 cores shared with other build and test jobs: figures are under load"},
        "model": {k: cfg[k] for k in ("hidden_size", "num_hidden_layers", "num_experts", "num_experts_per_tok",
                                      "moe_intermediate_size", "vocab_size")},
        "results": results,
        "wire_bytes_per_routed_row_element_ep2": round(per_elem, 4),
        "projection_deepseek_v3_decode": {
            "label": "PROJECTION, not a measurement: measured bytes per routed row element scaled to DeepSeek-V3 "
                     "(hidden 7168, top-8, 58 MoE layers), (N-1)/N of rows remote, bandwidth only (no latency, no "
                     "overlap with compute), NVLink 450 GB/s and IB 50 GB/s per GPU per direction",
            "rows": proj,
        },
    }
    a.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
