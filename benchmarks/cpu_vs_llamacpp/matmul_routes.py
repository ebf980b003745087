#!/usr/bin/env python3
"""moeserve against itself: the --cpu-matmul routes (own, onednn-prefill, onednn), alternated.

Each repeat runs `moe_engine_bench bench` once per route, in turn, on the same model: prefill
tokens/s of a --prompt-token prompt and decode tokens/s at the --batches sizes. Prints every
measurement and the medians, and writes them as JSON (--out). The model is one run.py built
(--models-dir/<shape>/hf).

  python3 matmul_routes.py --shape moe-s --repeats 3 --build-dir /tmp/frozen --out routes-moe-s.json
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time


def bench_binary(build_dir):
    for rel in ("benchmarks/moe_engine_bench", "moe_engine_bench"):
        path = os.path.join(build_dir, rel)
        if os.path.exists(path):
            return path
    sys.exit(f"moe_engine_bench not found under {build_dir}")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="moe-s")
    ap.add_argument("--models-dir", default="/tmp/moeserve_cpu_vs_llamacpp")
    ap.add_argument("--build-dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "build-bench"))
    ap.add_argument("--routes", default="own,onednn-prefill,onednn")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--ctx", type=int, default=64)
    ap.add_argument("--decode", type=int, default=16)
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()

    binary = bench_binary(a.build_dir)
    model = os.path.join(a.models_dir, a.shape, "hf")
    if not os.path.exists(os.path.join(model, "config.json")):
        sys.exit(f"{model}: no model; build it with run.py --shape {a.shape} first")
    routes = a.routes.split(",")
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    runs = []
    for r in range(a.repeats):
        for route in routes:
            cmd = [binary, "bench", "--model", model, "--threads", str(a.threads), "--prompt", str(a.prompt),
                   "--ctx", str(a.ctx), "--decode", str(a.decode), "--batches", a.batches, "--matmul", route]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
            j = json.loads(out.stdout.strip().splitlines()[-1])
            rec = {"repeat": r, "route": route, "matmul": j["matmul"], "prefill_tps": j["prefill_tps"],
                   "decode_tps": j["decode_tps"], "loadavg_1min_after": os.getloadavg()[0]}
            runs.append(rec)
            dec = " ".join(f"bs{b} {v:.1f}" for b, v in j["decode_tps"].items())
            print(f"repeat {r} {route:15s} prefill {j['prefill_tps']:.0f} tok/s, decode {dec} ({j['matmul']})",
                  flush=True)
    medians = {}
    for route in routes:
        mine = [x for x in runs if x["route"] == route]
        medians[route] = {"prefill_tps": statistics.median(x["prefill_tps"] for x in mine),
                          "decode_tps": {b: statistics.median(x["decode_tps"][b] for x in mine)
                                         for b in mine[0]["decode_tps"]}}
    base = medians[routes[0]]
    print(f"medians (ratio to {routes[0]}):")
    for route, m in medians.items():
        dec = ", ".join(f"bs{b} {v:.1f} ({v / base['decode_tps'][b]:.2f}x)" for b, v in m["decode_tps"].items())
        print(f"  {route:15s} prefill {m['prefill_tps']:.0f} ({m['prefill_tps'] / base['prefill_tps']:.2f}x), {dec}")
    result = {"shape": a.shape, "machine": cpu_model(), "threads": a.threads, "date": time.strftime("%Y-%m-%d %H:%M"),
              "command": " ".join(sys.argv), "runs": runs, "medians": medians}
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
