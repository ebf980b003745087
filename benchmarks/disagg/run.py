#!/usr/bin/env python3
"""Disaggregated vs aggregated serving on this machine (issue 21's figures).

    run.py --build-dir build/release [--rates 1,2,4] [--input-lens 64,512] [--num-requests 16]

Two setups on the same random-weight Qwen3-MoE model (written once by
benchmarks/cpu_vs_llamacpp/make_models.py's functions, shape "disagg-s" below), alternated per
point so that load from other work on the machine falls on both:

  disagg  `moeserve serve --role prefill` pinned to core 0 (--threads 1), `--role decode` pinned
          to core 1 (--threads 1), `moeserve router` in front (unpinned: it only relays);
  agg     one `moeserve serve` pinned to cores 0,1 (--threads 2);
  agg1t   the same with --threads 1 (a reference: how much of a difference is the 2-thread pool
          on a loaded 2-core machine rather than disaggregation).

At every (rate, prompt length): `moeserve bench` with Poisson arrivals at that rate, fixed
output length, --slo-ttft / --slo-itl; TTFT and inter-token latency p50/p99 and goodput (requests
per second meeting both SLOs) from its JSON. KV transfer per request (bytes and seconds, and its
share of TTFT) from the decode worker's metrics when it exports them (see README).

Writes results.json and results.png (matplotlib) beside this script, or to --out.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks" / "cpu_vs_llamacpp"))

SHAPE = dict(vocab_size=4096, hidden_size=512, num_layers=4, num_heads=8, num_kv_heads=2, head_dim=64,
             num_experts=16, num_experts_per_tok=2, moe_intermediate_size=256)


def make_model(out: Path) -> Path:
    import make_models as mm  # noqa: E402  (benchmarks/cpu_vs_llamacpp)
    hf = out / "hf"
    if (hf / "model.safetensors").exists() and json.loads((hf / "config.json").read_text()) == mm.hf_config(SHAPE):
        return hf
    hf.mkdir(parents=True, exist_ok=True)
    (hf / "config.json").write_text(json.dumps(mm.hf_config(SHAPE), indent=2) + "\n")
    mm.write_safetensors(hf / "model.safetensors", mm.tensor_specs(SHAPE), 1234)
    return hf


class Proc:
    def __init__(self, cmd, name, patterns):
        self.name = name
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.found, self.lines = {}, []
        self.ev = threading.Event()
        self.patterns = patterns

        def read():
            for line in self.p.stdout:
                self.lines.append(line)
                for key, pat in self.patterns.items():
                    m = re.search(pat, line)
                    if m and key not in self.found:
                        self.found[key] = m.group(1)
                if all(k in self.found for k in self.patterns):
                    self.ev.set()
            self.ev.set()

        threading.Thread(target=read, daemon=True).start()
        if not self.ev.wait(300) or not all(k in self.found for k in self.patterns):
            self.stop()
            raise RuntimeError(f"{name} did not start:\n" + "".join(self.lines[-40:]))

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(30)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def serve_cmd(a, model, cores, threads, role=None):
    cmd = ["taskset", "-c", cores, str(a.moeserve), "serve", "--model", str(model), "--host", "127.0.0.1",
           "--port", "0", "--threads", str(threads), "--kv-cache-bytes", str(a.kv_cache_bytes),
           "--kv-block-size", "16", "--drain-grace-seconds", "0"]
    if role:
        cmd += ["--role", role, "--internal-port", "0", "--internal-secret", "bench"]
    return cmd


def start_setup(a, model, kind):
    procs = []
    if kind in ("agg", "agg1t"):
        w = Proc(serve_cmd(a, model, "0,1", 2 if kind == "agg" else 1), kind, {"addr": r"moeserve listening on (\S+)"})
        return [w], w.found["addr"]
    pats = {"addr": r"moeserve listening on (\S+)", "internal": r"internal[^\n]*listening on (\S+)"}
    p = Proc(serve_cmd(a, model, "0", 1, "prefill"), "prefill", pats)
    procs.append(p)
    d = Proc(serve_cmd(a, model, "1", 1, "decode"), "decode", pats)
    procs.append(d)
    r = Proc([str(a.moeserve), "router", "--model", str(model), "--prefill", p.found["internal"], "--decode",
              d.found["internal"], "--port", "0", "--internal-secret", "bench"], "router",
             {"addr": r"router listening on (\S+)"})
    procs.append(r)
    return procs, r.found["addr"], d.found["addr"]


def metrics_text(a, addr):
    r = subprocess.run([str(a.moeserve), "metrics", "--server", addr], capture_output=True, text=True, timeout=60)
    return r.stdout


def metric_sum(text, name):
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    return total if found else None


def bench(a, addr, rate, input_len, seed, num_requests=None):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [str(a.moeserve), "bench", "--server", addr, "--num-requests", str(num_requests or a.num_requests), "--request-rate",
           str(rate), "--input-len", str(input_len), "--output-len", str(a.output_len), "--seed", str(seed),
           "--slo-ttft", str(a.slo_ttft), "--slo-itl", str(a.slo_itl), "--output", out]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    if r.returncode not in (0, 1):
        raise RuntimeError("bench failed: " + r.stderr[-2000:] + r.stdout[-2000:])
    j = json.loads(Path(out).read_text())
    os.unlink(out)
    return j["summary"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=str(REPO / "build" / "release"))
    ap.add_argument("--model-dir", default="/tmp/moeserve_disagg_bench")
    ap.add_argument("--rates", default="1,2,4")
    ap.add_argument("--input-lens", default="64,512")
    ap.add_argument("--output-len", type=int, default=32)
    ap.add_argument("--num-requests", type=int, default=16)
    ap.add_argument("--slo-ttft", type=float, default=1.0)
    ap.add_argument("--slo-itl", type=float, default=0.05)
    ap.add_argument("--setups", default="agg,disagg,agg1t",
                    help="agg: 1 worker, 2 threads on cores 0,1; disagg: prefill on core 0 + decode on core 1 + "
                         "router; agg1t: 1 worker, 1 thread, cores 0,1 (tells thread-pool contention apart)")
    ap.add_argument("--kv-cache-bytes", type=int, default=64 << 20)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results.json"))
    a = ap.parse_args()
    a.moeserve = Path(a.build_dir) / "src" / "cli" / "moeserve"
    model = make_model(Path(a.model_dir))
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    points = []
    rates = [float(x) for x in a.rates.split(",")]
    lens = [int(x) for x in a.input_lens.split(",")]
    setups = {}
    try:
        kinds = a.setups.split(",")
        for kind in kinds:
            setups[kind] = start_setup(a, model, kind)
        # Warm-up requests on each (first touch of the weights), not recorded.
        for kind, s in setups.items():
            bench(a, s[1], 100.0, 16, 999, num_requests=2)
        seed = 1
        for input_len in lens:
            for rate in rates:
                for kind in (kinds if seed % 2 else list(reversed(kinds))):
                    s = setups[kind]
                    before = metrics_text(a, s[2]) if kind == "disagg" else ""
                    load0 = os.getloadavg()[0]
                    summ = bench(a, s[1], rate, input_len, seed)
                    pt = {"setup": kind, "rate": rate, "input_len": input_len, "output_len": a.output_len,
                          "loadavg_1m_before": load0, "loadavg_1m_after": os.getloadavg()[0], **summ}
                    if kind == "disagg":
                        after = metrics_text(a, s[2])
                        # The decode worker's KV import metrics (src/engine/engine_metrics.h).
                        for m in ("moe:kv_import_bytes_total", "moe:kv_import_seconds_sum", "moe:kv_imports_total"):
                            b0, b1 = metric_sum(before, m), metric_sum(after, m)
                            pt[m] = None if b1 is None else b1 - (b0 or 0.0)
                        n = pt.get("moe:kv_imports_total") or 0
                        if n:
                            pt["kv_bytes_per_request"] = pt["moe:kv_import_bytes_total"] / n
                            pt["kv_seconds_per_request"] = pt["moe:kv_import_seconds_sum"] / n
                            if summ.get("ttft_p50_seconds"):
                                pt["kv_share_of_ttft_p50"] = pt["kv_seconds_per_request"] / summ["ttft_p50_seconds"]
                    points.append(pt)
                    print(f"{kind:6s} len {input_len:4d} rate {rate:4.1f}: TTFT p50 {summ['ttft_p50_seconds']} "
                          f"p99 {summ['ttft_p99_seconds']}  ITL p50 {summ['itl_p50_seconds']} p99 "
                          f"{summ['itl_p99_seconds']}  goodput {summ['goodput_requests_per_second']:.3f}/s "
                          f"errors {summ['errors']}", flush=True)
                seed += 1
    finally:
        for s in setups.values():
            for p in reversed(s[0]):
                p.stop()
    result = {"cpu": cpu, "nproc": os.cpu_count(), "shape": SHAPE, "config": vars(a) | {"moeserve": str(a.moeserve)},
              "note": "2 vCPUs shared with other sessions' builds: absolute times are loose; compare the two setups "
                      "at the same point (alternated).", "points": points}
    result["config"]["moeserve"] = str(a.moeserve)
    Path(a.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print("wrote", a.out)
    plot(result, Path(a.out).with_suffix(".png"))


def plot(result, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    pts = result["points"]
    lens = sorted({p["input_len"] for p in pts})
    fig, axes = plt.subplots(len(lens), 3, figsize=(13, 3.6 * len(lens)), squeeze=False)
    for row, L in enumerate(lens):
        for col, (key, label) in enumerate([("ttft", "TTFT (s)"), ("itl", "inter-token latency (s)"),
                                            ("goodput_requests_per_second", "goodput (req/s)")]):
            ax = axes[row][col]
            for kind, style in (("agg", "o-"), ("disagg", "s--"), ("agg1t", "^:")):
                sel = sorted((p for p in pts if p["setup"] == kind and p["input_len"] == L), key=lambda p: p["rate"])
                xs = [p["rate"] for p in sel]
                if key == "goodput_requests_per_second":
                    ax.plot(xs, [p[key] for p in sel], style, label=kind)
                else:
                    ax.plot(xs, [p[f"{key}_p50_seconds"] for p in sel], style, label=f"{kind} p50")
                    ax.plot(xs, [p[f"{key}_p99_seconds"] for p in sel], style, alpha=0.5, label=f"{kind} p99")
            ax.set_title(f"prompt {L} tokens: {label}")
            ax.set_xlabel("request rate (req/s, Poisson)")
            ax.legend(fontsize=7)
    fig.suptitle("1 prefill + 1 decode worker (1 core each) vs 1 aggregated worker (2 cores); " + result["cpu"],
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print("wrote", path)


if __name__ == "__main__":
    main()
