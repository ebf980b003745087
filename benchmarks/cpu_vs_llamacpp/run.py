#!/usr/bin/env python3
"""moeserve against llama.cpp on the same random MoE model, same machine, same run (issues 6, 20).

    run.py --shape moe-s --threads 2 --repeats 3 --out results.json --plot results.png
    run.py --shape ds-s --batches 1,16,64 ...      (DeepSeek-V3-shaped: MLA, grouped sigmoid routing)

Builds the model (make_models.py; skipped when up to date), checks that both engines compute the
same logits on it, then for each repeat runs, one subprocess each and in this order: the
bandwidth probe, moeserve (build-bench/benchmarks/moe_engine_bench), llama.cpp (this script in
--llama-worker mode, llama-cpp-python's low-level API). Each engine measures:
  prefill tokens/s of one --prompt-token prompt (one decode call / forward step; a warm-up first),
  decode tokens/s at batch 1 and aggregate decode tokens/s with N concurrent sequences (each with
  --ctx cached tokens, one new token per sequence per step, greedy feedback),
  peak RSS (VmHWM of its process).
The decode batch-1 roofline is active weight bytes per token / the probe's read bandwidth. The
host's bandwidth swings by 1.5x within minutes, so each engine also probes right before and right
after its own batch-1 decode ("bs1_bandwidth"); the "adjacent" fraction divides by the faster of
those two (median over repeats). moeserve stores its weight matrices (attention, experts, lm_head)
in a lossless 12-bit form, so it reads fewer bytes than that; the JSON also has its fraction of the
roofline of the bytes it reads.
Figures are medians over the repeats; the JSON keeps every repeat.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import re

from make_models import SHAPES, active_weight_bytes_per_token, expert_bytes_per_token, matrix_bytes_per_token

HERE = Path(__file__).resolve().parent
BS1_PROBE_GIB = 0.5  # the probes right before and after each engine's batch-1 decode
CTX_GROUP = 16  # sequences prefilled per call when setting up the decode context (as moe_engine_bench)
REPO = HERE.parent.parent


def vm_hwm_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


def token(i: int, vocab: int) -> int:
    return (i * 7919 + 13) % vocab  # the same ids moe_engine_bench feeds


# ---- llama.cpp worker (runs in its own process) --------------------------------------------

class Llama:
    def __init__(self, gguf: str, threads: int, n_ctx: int, n_batch: int, n_seq: int):
        import llama_cpp as lc
        self.lc = lc
        lc.llama_backend_init()
        # llama.cpp's log goes nowhere but into self.log (its KV cache size line is read back).
        self.log = []
        self._log_cb = lc.llama_log_callback(lambda level, text, data: self.log.append(text.decode(errors="replace")))
        lc.llama_log_set(self._log_cb, None)
        mp = lc.llama_model_default_params()
        self.model = lc.llama_model_load_from_file(gguf.encode(), mp)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {gguf}")
        cp = lc.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = n_batch
        cp.n_ubatch = min(n_batch, 512)
        cp.n_seq_max = n_seq
        cp.kv_unified = True  # one cache shared by all sequences, like moeserve's paged pool
        cp.n_threads = threads
        cp.n_threads_batch = threads
        cp.no_perf = True
        self.ctx = lc.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create a context")
        self.vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(self.model))
        self.mem = lc.llama_get_memory(self.ctx)
        self.batch = lc.llama_batch_init(max(n_batch, n_seq), 0, n_seq)

    def clear(self):
        self.lc.llama_memory_clear(self.mem, True)

    def decode(self, items):
        """items: (token, pos, seq, want_logits). Returns the logits rows of the wanted ones."""
        import numpy as np
        b = self.batch
        for i, (t, p, s, want) in enumerate(items):
            b.token[i] = t
            b.pos[i] = p
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = s
            b.logits[i] = want
        b.n_tokens = len(items)
        rc = self.lc.llama_decode(self.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        n_out = sum(1 for it in items if it[3])
        ptr = self.lc.llama_get_logits(self.ctx)
        return np.ctypeslib.as_array(ptr, shape=(n_out, self.vocab))


def llama_kv_size(log) -> dict:
    """llama.cpp's own account of its KV cache (its log line "size = X MiB (N cells, L layers,
    ...), K (f16): a MiB, V (f16): b MiB"): bytes per token over all layers. For deepseek2 with
    the split kv_b it keeps one K row of kv_lora_rank + rope per token and layer and no V."""
    m = re.search(r"size =\s*([\d.]+) MiB \(\s*(\d+) cells,\s*(\d+) layers.*?K \((\w+)\):\s*([\d.]+) MiB, "
                  r"V \((\w+)\):\s*([\d.]+) MiB", "".join(log))
    if not m:
        return {"kv_bytes_per_token": None, "kv_log": "no KV size line in llama.cpp's log"}
    mib, cells = float(m.group(1)), int(m.group(2))
    return {"kv_bytes_per_token": round(mib * 2**20 / cells), "kv_cells": cells, "kv_layers": int(m.group(3)),
            "kv_k_mib": float(m.group(5)), "kv_v_mib": float(m.group(7)), "kv_k_type": m.group(4)}


def probe_gbs(a) -> float:
    """The bandwidth probe in its own process (its array stays out of this one's peak RSS)."""
    p = subprocess.run([a.probe_harness, "bandwidth", "--threads", str(a.threads), "--gib", str(BS1_PROBE_GIB),
                        "--passes", "3"], capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise SystemExit(f"bandwidth probe failed: {p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])["median_gbs"]


def llama_worker(a) -> int:
    import numpy as np
    base_kib = vm_hwm_kib()
    batches = [int(x) for x in a.batches.split(",")]
    nmax = max(batches)
    n_ctx = max(a.prompt, nmax * (a.ctx + a.decode + 1)) + 64
    t0 = time.perf_counter()
    L = Llama(a.gguf, a.threads, n_ctx, max(a.prompt, nmax, a.ctx * CTX_GROUP), nmax)
    out = {"mode": "bench", "engine": "llama.cpp", "threads": a.threads, "load_s": time.perf_counter() - t0,
           "kv_dtype": "f16 (llama.cpp default)", "python_baseline_kib": base_kib, **llama_kv_size(L.log)}
    if a.logits_ids:
        ids = [int(x) for x in a.logits_ids.split(",")]
        rows = L.decode([(t, i, 0, True) for i, t in enumerate(ids)])
        out = {"mode": "logits", "logits": rows.tolist()}
        out["vm_hwm_kib"] = vm_hwm_kib()
        print(json.dumps(out))
        return 0
    V = L.vocab
    tps = []
    for _ in range(2):  # warm-up, then timed
        L.clear()
        items = [(token(i, V), i, 0, i == a.prompt - 1) for i in range(a.prompt)]
        t = time.perf_counter()
        L.decode(items)
        tps.append(a.prompt / (time.perf_counter() - t))
    out.update(prefill_tokens=a.prompt, prefill_tps=tps[-1], prefill_tps_cold=tps[0])
    dec = {}
    for n in batches:
        L.clear()
        for s0 in range(0, n, CTX_GROUP):  # untimed: sets up the cache, CTX_GROUP sequences per call
            L.decode([(token(i + 31 * s, V), i, s, i == a.ctx - 1)
                      for s in range(s0, min(n, s0 + CTX_GROUP)) for i in range(a.ctx)])
        last = [token(1000 + s, V) for s in range(n)]
        t = None
        probe = n == 1 and a.probe_harness
        for step in range(a.decode + 1):  # step 0 warms up
            if step == 1:
                if probe:  # as moe_engine_bench --bs1-probe-gib: a probe right before and right after
                    out["bs1_bandwidth"] = {"before_gbs": probe_gbs(a)}
                t = time.perf_counter()
            rows = L.decode([(last[s], a.ctx + step, s, True) for s in range(n)])
            last = rows.argmax(axis=1).tolist()
        dec[str(n)] = n * a.decode / (time.perf_counter() - t)
        if probe:
            out["bs1_bandwidth"]["after_gbs"] = probe_gbs(a)
    out.update(ctx_tokens=a.ctx, decode_steps=a.decode, decode_tps=dec, vm_hwm_kib=vm_hwm_kib())
    print(json.dumps(out))
    return 0


# ---- driver ---------------------------------------------------------------------------------

def run_json(cmd, env, what: str, timeout: float) -> dict:
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise SystemExit(f"{what} failed (exit {p.returncode}): {' '.join(map(str, cmd))}\n{p.stderr[-3000:]}")
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if not lines:
        raise SystemExit(f"{what}: no JSON on stdout\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    r = json.loads(lines[-1])
    r["wall_s"] = time.perf_counter() - t
    r["loadavg_1min_after"] = os.getloadavg()[0]  # the host is shared: > threads means others were running
    return r


def median(xs):
    return statistics.median(xs) if xs else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="moe-s", choices=sorted(SHAPES))
    ap.add_argument("--weights", default="bf16", choices=["bf16", "fp8"],
                    help="fp8 (ds-* shapes): moeserve on the FP8 e4m3 checkpoint, llama.cpp on Q8_0")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("results.json"))
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--models-dir", type=Path, default=Path("/tmp/moeserve_cpu_vs_llamacpp"))
    ap.add_argument("--build-dir", type=Path, default=REPO / "build-bench")
    ap.add_argument("--prompt", type=int, default=512, help="prefill prompt length")
    ap.add_argument("--ctx", type=int, default=64, help="cached tokens per sequence before decode")
    ap.add_argument("--decode", type=int, default=32, help="timed decode steps")
    ap.add_argument("--batches", default="1,4,16,64")
    ap.add_argument("--bw-gib", type=float, default=1.0)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--omp-wait-policy", default="passive", choices=["passive", "active", "unset"],
                    help="OMP_WAIT_POLICY for both engines (passive suits a shared host)")
    # worker mode (internal)
    ap.add_argument("--llama-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--gguf", help=argparse.SUPPRESS)
    ap.add_argument("--logits-ids", help=argparse.SUPPRESS)
    ap.add_argument("--probe-harness", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.llama_worker:
        return llama_worker(a)

    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), OPENBLAS_NUM_THREADS="1", OMP_PROC_BIND="false")
    # Both engines' thread teams are OpenMP (llama-cpp-python builds ggml with OpenMP). On a shared
    # host a spinning team waits for a descheduled thread at every barrier; passive waiting made
    # both engines 1.2-5x faster there (README). The policy applies to both alike.
    if a.omp_wait_policy != "unset":
        env["OMP_WAIT_POLICY"] = a.omp_wait_policy
    harness = a.build_dir / "benchmarks" / "moe_engine_bench"
    if not harness.exists():
        raise SystemExit(f"{harness} is missing: cmake --build {a.build_dir} --target moe_engine_bench")
    mdir = a.models_dir / a.shape
    fp8 = a.weights == "fp8"
    subprocess.run([sys.executable, str(HERE / "make_models.py"), "--shape", a.shape, "--out", str(mdir)] +
                   (["--fp8"] if fp8 else []), check=True)
    shape = json.loads((mdir / "shape.json").read_text())
    hf, gguf = (mdir / "hf-fp8", mdir / "model-q8_0.gguf") if fp8 else (mdir / "hf", mdir / "model-bf16.gguf")
    me = [sys.executable, str(Path(__file__).resolve()), "--llama-worker", "--gguf", str(gguf), "--threads",
          str(a.threads), "--prompt", str(a.prompt), "--ctx", str(a.ctx), "--decode", str(a.decode),
          "--batches", a.batches, "--probe-harness", str(harness)]

    # 1. Same model? Logits of a 16-token prompt from both engines.
    ids = ",".join(str(token(i, shape["vocab_size"])) for i in range(16))
    import numpy as np
    ms = np.array(run_json([str(harness), "logits", "--model", str(hf), "--threads", str(a.threads),
                            "--prompt-ids", ids], env, "moeserve logits", a.timeout)["logits"])
    ll = np.array(run_json(me + ["--logits-ids", ids], env, "llama.cpp logits", a.timeout)["logits"])
    check = {"prompt_tokens": 16, "argmax_agree": int((ms.argmax(1) == ll.argmax(1)).sum()),
             "max_abs_diff": float(np.abs(ms - ll).max()), "mean_abs_diff": float(np.abs(ms - ll).mean()),
             "logit_std": float(ll.std()),
             # per position: the worst row (a near-tie in expert routing flips an expert: bf16-level
             # noise then becomes a visibly different row; rows elsewhere stay close)
             "max_abs_diff_per_position": np.abs(ms - ll).max(1).round(4).tolist()}
    print(f"same model? argmax agrees on {check['argmax_agree']}/16 positions, max |logit diff| "
          f"{check['max_abs_diff']:.4f}, mean {check['mean_abs_diff']:.4f} (logit std {check['logit_std']:.3f})", flush=True)

    # 2. A/B/A/B.
    runs = {"bandwidth": [], "moeserve": [], "llama.cpp": []}
    for r in range(a.repeats):
        bw = run_json([str(harness), "bandwidth", "--threads", str(a.threads), "--gib", str(a.bw_gib)], env,
                      "bandwidth probe", a.timeout)
        runs["bandwidth"].append(bw)
        print(f"[{r + 1}/{a.repeats}] read bandwidth {bw['median_gbs']:.1f} GB/s", flush=True)
        m = run_json([str(harness), "bench", "--model", str(hf), "--threads", str(a.threads), "--prompt", str(a.prompt),
                      "--ctx", str(a.ctx), "--decode", str(a.decode), "--batches", a.batches,
                      "--bs1-probe-gib", str(BS1_PROBE_GIB)], env, "moeserve",
                     a.timeout)
        runs["moeserve"].append(m)
        print(f"[{r + 1}/{a.repeats}] moeserve  prefill {m['prefill_tps']:.1f} tok/s, decode {m['decode_tps']}", flush=True)
        l = run_json(me, env, "llama.cpp", a.timeout)
        runs["llama.cpp"].append(l)
        print(f"[{r + 1}/{a.repeats}] llama.cpp prefill {l['prefill_tps']:.1f} tok/s, decode {l['decode_tps']}", flush=True)

    batches = [int(x) for x in a.batches.split(",")]
    bw = median([b["median_gbs"] for b in runs["bandwidth"]])
    bytes_tok = shape["active_weight_bytes_per_token"]
    # Each engine's fraction of the roofline of the bytes its own format reads (the same for bf16).
    eng_bytes = {"moeserve": bytes_tok, "llama.cpp": bytes_tok}
    if fp8:
        s_shape = SHAPES[a.shape]
        eng_bytes = {"moeserve": active_weight_bytes_per_token(s_shape, "fp8"),
                     "llama.cpp": active_weight_bytes_per_token(s_shape, "q8_0")}
        bytes_tok = eng_bytes["moeserve"]
    roofline = bw * 1e9 / bytes_tok
    summary = {}
    if any(not x.get("bs1_bandwidth", {}).get("rss_reset", True) for x in runs["moeserve"]):
        print("warning: /proc/self/clear_refs was not writable: moeserve's peak RSS includes its "
              f"{BS1_PROBE_GIB} GiB batch-1 bandwidth probe", file=sys.stderr)
    for eng in ("moeserve", "llama.cpp"):
        rs = runs[eng]
        s = {"prefill_tps": median([x["prefill_tps"] for x in rs]),
             "decode_tps": {str(n): median([x["decode_tps"][str(n)] for x in rs]) for n in batches},
             "peak_rss_mib": median([x["vm_hwm_kib"] for x in rs]) / 1024.0,
             "kv_bytes_per_token": rs[-1].get("kv_bytes_per_token")}
        if "1" in s["decode_tps"]:
            s["weight_bytes_per_token"] = eng_bytes[eng]
            s["decode_bs1_roofline_fraction"] = s["decode_tps"]["1"] * eng_bytes[eng] / (bw * 1e9)
            # Against the probes taken right before and after each repeat's batch-1 decode (the
            # faster of the two: the harsher roofline), median over repeats.
            s["decode_bs1_adjacent_roofline_fraction"] = median([adjacent_fraction(x, eng_bytes[eng]) for x in rs])
        summary[eng] = s
    # moeserve keeps its matrices in a lossless 12-bit form (bf16_panels.h): it reads 3/4 of their
    # bf16 bytes (plus ~0.02% exceptions, left out here). Its fraction of the roofline of the bytes
    # it actually reads is the honest efficiency figure; the one above (bf16 bytes) can pass 1.
    # Runs before the attention projections and lm_head took the form said "compress_experts".
    own_bytes_tok = bytes_tok
    if fp8:
        pass  # e4m3 matrices are read as stored; lm_head's 12-bit form is left out of the account
    elif all(x.get("compress_weights", False) for x in runs["moeserve"]):
        own_bytes_tok = bytes_tok - matrix_bytes_per_token(shape) // 4
    elif all(x.get("compress_experts", False) for x in runs["moeserve"]):
        own_bytes_tok = bytes_tok - expert_bytes_per_token(shape) // 4
    if "1" in summary["moeserve"]["decode_tps"] and not fp8:
        summary["moeserve"]["decode_bs1_own_bytes_roofline_fraction"] = (
            summary["moeserve"]["decode_tps"]["1"] * own_bytes_tok / (bw * 1e9))
        summary["moeserve"]["decode_bs1_own_bytes_adjacent_roofline_fraction"] = median(
            [adjacent_fraction(x, own_bytes_tok) for x in runs["moeserve"]])
    result = {
        "shape": shape, "weights": {"moeserve": "fp8 e4m3 128x128 blocks", "llama.cpp": "Q8_0"} if fp8 else "bf16",
        "threads": a.threads, "omp_wait_policy": a.omp_wait_policy, "repeats": a.repeats,
        "prompt_tokens": a.prompt,
        "ctx_tokens_per_sequence": a.ctx, "decode_steps": a.decode,
        "machine": {"cpu": cpu_model(), "nproc": os.cpu_count()},
        "llama_cpp_python": llama_version(), "moeserve_commit": git_head(),
        "same_model_check": check,
        "read_bandwidth_gbs": bw, "active_weight_bytes_per_token": bytes_tok,
        "kv_bytes_per_token_expected_bf16": shape.get("kv_bytes_per_token_bf16"),
        "moeserve_bytes_read_per_token": own_bytes_tok,
        "decode_bs1_roofline_tps": roofline,
        "median": summary, "runs": runs,
    }
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result, batches)
    if a.plot:
        plot(result, batches, a.plot)
        print(f"plot: {a.plot}")
    print(f"json: {a.out}")
    return 0


def adjacent_fraction(run: dict, bytes_tok: int) -> float:
    """Batch-1 tok/s of one repeat over the roofline of the faster of its two adjacent probes."""
    gbs = max(run["bs1_bandwidth"]["before_gbs"], run["bs1_bandwidth"]["after_gbs"])
    return run["decode_tps"]["1"] * bytes_tok / (gbs * 1e9)


def print_table(res: dict, batches) -> None:
    m, l = res["median"]["moeserve"], res["median"]["llama.cpp"]
    rows = [("prefill %d tok/s" % res["prompt_tokens"], m["prefill_tps"], l["prefill_tps"])]
    for n in batches:
        rows.append((("decode bs 1 tok/s" if n == 1 else f"decode {n} seqs aggregate tok/s"),
                     m["decode_tps"][str(n)], l["decode_tps"][str(n)]))
    rows.append(("peak RSS MiB", m["peak_rss_mib"], l["peak_rss_mib"]))
    if m.get("kv_bytes_per_token") and l.get("kv_bytes_per_token"):
        rows.append(("KV cache bytes per token", m["kv_bytes_per_token"], l["kv_bytes_per_token"]))
    if "decode_bs1_roofline_fraction" in m:
        rows.append(("decode bs 1 / roofline", m["decode_bs1_roofline_fraction"], l["decode_bs1_roofline_fraction"]))
        rows.append(("decode bs 1 / adjacent roofline", m["decode_bs1_adjacent_roofline_fraction"],
                     l["decode_bs1_adjacent_roofline_fraction"]))
    print(f"\n{res['shape']['shape']}, {res['threads']} threads, median of {res['repeats']}; read bandwidth "
          f"{res['read_bandwidth_gbs']:.1f} GB/s, {res['active_weight_bytes_per_token'] / 1e6:.0f} MB of weights "
          f"per token -> decode bs 1 roofline {res['decode_bs1_roofline_tps']:.1f} tok/s")
    print(f"{'':34s} {'moeserve':>12s} {'llama.cpp':>12s} {'ratio':>8s}")
    for name, x, y in rows:
        print(f"{name:34s} {x:12.3f} {y:12.3f} {x / y if y else float('nan'):8.2f}")
    if "decode_bs1_own_bytes_roofline_fraction" in m:
        print(f"moeserve reads {res['moeserve_bytes_read_per_token'] / 1e6:.0f} MB per token (12-bit matrices): "
              f"decode bs 1 at {m['decode_bs1_own_bytes_roofline_fraction']:.2f} of that roofline, "
              f"{m['decode_bs1_own_bytes_adjacent_roofline_fraction']:.2f} against the adjacent probes")


def plot(res: dict, batches, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for eng, mk in (("moeserve", "o-"), ("llama.cpp", "s--")):
        ys = [res["median"][eng]["decode_tps"][str(n)] for n in batches]
        ax.plot(batches, ys, mk, label=eng)
        for rr in res["runs"][eng]:  # every repeat, faint
            ax.plot(batches, [rr["decode_tps"][str(n)] for n in batches], mk[0], alpha=0.25,
                    color=ax.lines[-1].get_color())
    ax.axhline(res["decode_bs1_roofline_tps"], color="grey", lw=0.8, ls=":",
               label=f"bs 1 bandwidth roofline ({res['read_bandwidth_gbs']:.0f} GB/s)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(n) for n in batches])
    ax.set_xlabel("concurrent sequences (one token each per step)")
    ax.set_ylabel("aggregate decode tokens/s")
    wts = "bf16" if res.get("weights", "bf16") == "bf16" else "moeserve FP8 vs llama.cpp Q8_0"
    ax.set_title(f"{res['shape']['shape']}, {wts}, {res['threads']} threads, median of {res['repeats']}\n"
                 f"{res['machine']['cpu']}, shared host (load avg in the JSON)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def llama_version() -> str:
    try:
        import llama_cpp
        return llama_cpp.__version__
    except Exception as e:  # noqa: BLE001 - only for the record
        return f"unknown ({e})"


def git_head() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
    except OSError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
