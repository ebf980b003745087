#!/usr/bin/env python3
"""moeserve's CPU engine on shared cores (issue 23): quiet vs busy neighbours vs a CPU quota.

    run.py --model-dir /tmp/cpushare_models/moe-s \\
           --engine new=build/release/benchmarks/moe_engine_bench \\
           --engine old=build/main/build/release/benchmarks/moe_engine_bench \\
           --conditions quiet,busy1,busy2,quota --repeats 2 --out results.json --plot results.png

--model-dir holds hf/ (what moeserve loads) and, for llama.cpp, model-bf16.gguf
(benchmarks/cpu_vs_llamacpp/make_models.py writes both). Each --engine NAME=PATH is a
moe_engine_bench binary (e.g. this branch and main, built side by side); llama.cpp runs too when
llama_cpp imports and the gguf exists (benchmarks/cpu_vs_llamacpp/run.py's worker mode).

Conditions:
  quiet   nothing started by this script (the host may still be loaded: see loadavg)
  busyK   K competing busy processes, `sh -c 'while :; do :; done'`, for the whole engine run
  quota   the engine process in a cgroup with a CFS quota of --quota CPUs (cgroup v2 cpu.max when
          the cpu controller is on the unified hierarchy, else v1 cpu.cfs_quota_us: the same CFS
          bandwidth control); skipped, with the reason in the JSON, when no cgroup can be made.
Per repeat, every condition runs every engine (the engine order alternates between repeats), so
ratios are taken within one run. Each engine run reports prefill tokens/s (--prompt tokens, one
step) and decode tokens/s at each --batches size. /proc/loadavg is recorded before and after each
run: on a host shared with other work, absolute figures move; the ratios to the same engine's
quiet runs in the same repeat are the figures to read.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
LLAMA_RUN = REPO / "benchmarks" / "cpu_vs_llamacpp" / "run.py"


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def git_head() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class Busy:
    """K busy processes for the duration of a with-block."""

    def __init__(self, k: int):
        self.k, self.procs = k, []

    def __enter__(self):
        for _ in range(self.k):
            self.procs.append(subprocess.Popen(["sh", "-c", "while :; do :; done"], start_new_session=True))
        time.sleep(0.3)  # let the scheduler spread them
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        self.procs = []


class Quota:
    """A cgroup with a CFS bandwidth quota; `wrap(cmd)` runs cmd inside it."""

    def __init__(self, cpus: float):
        self.cpus, self.dir, self.how, self.error = cpus, None, None, None
        period = 100000
        quota = int(cpus * period)
        v2 = Path("/sys/fs/cgroup")
        tries = []
        # v2: the cpu controller must be on the unified hierarchy (cgroup.controllers lists it).
        for root in (v2, v2 / "unified"):
            ctl = root / "cgroup.controllers"
            if ctl.exists():
                if "cpu" in ctl.read_text().split():
                    tries.append(("v2", root, lambda d: (d / "cpu.max").write_text(f"{quota} {period}\n")))
                else:
                    tries.append(("v2-no-cpu", root, None))
        for root in (v2 / "cpu", v2 / "cpu,cpuacct"):
            if (root / "cpu.cfs_quota_us").exists():
                def set_v1(d, quota=quota, period=period):
                    (d / "cpu.cfs_period_us").write_text(f"{period}\n")
                    (d / "cpu.cfs_quota_us").write_text(f"{quota}\n")
                tries.append(("v1", root, set_v1))
        notes = []
        for how, root, setter in tries:
            if setter is None:
                notes.append(f"{root}: cgroup v2 without the cpu controller (controllers: "
                             f"{(root / 'cgroup.controllers').read_text().strip() or 'none'})")
                continue
            d = root / f"moe_contention_{os.getpid()}"
            try:
                d.mkdir()
                setter(d)
                self.dir, self.how = d, f"{how}: {d} quota {quota} us per {period} us"
                break
            except OSError as e:
                notes.append(f"{how} {d}: {e}")
                try:
                    d.rmdir()
                except OSError:
                    pass
        if self.dir is None:
            self.error = "; ".join(notes) or "no cgroup cpu controller found"
        self.notes = notes

    def wrap(self, cmd):
        return ["sh", "-c", f'echo $$ > "{self.dir}/cgroup.procs" && exec "$@"', "sh"] + [str(c) for c in cmd]

    def close(self):
        if self.dir is not None:
            for _ in range(50):
                try:
                    self.dir.rmdir()
                    return
                except OSError:
                    time.sleep(0.1)


def run_json(cmd, timeout: float) -> dict:
    t = time.perf_counter()
    env = dict(os.environ, OMP_WAIT_POLICY="passive", OPENBLAS_NUM_THREADS="1")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"exit {p.returncode}: {' '.join(map(str, cmd))}\n{p.stderr[-3000:]}")
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if not lines:
        raise RuntimeError(f"no JSON on stdout: {p.stdout[-2000:]} {p.stderr[-2000:]}")
    r = json.loads(lines[-1])
    r["wall_s"] = time.perf_counter() - t
    return r


def llama_importable() -> str | None:
    p = subprocess.run([sys.executable, "-c", "import llama_cpp; print(llama_cpp.__version__)"], capture_output=True,
                       text=True)
    return p.stdout.strip() if p.returncode == 0 else None


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def metrics_of(r: dict, batches) -> dict:
    m = {"prefill": r["prefill_tps"]}
    for n in batches:
        m[f"decode{n}"] = r["decode_tps"][str(n)]
    return m


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--engine", action="append", required=True, help="NAME=PATH of a moe_engine_bench binary")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--ctx", type=int, default=64)
    ap.add_argument("--decode", type=int, default=16)
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--conditions", default="quiet,busy1,busy2,quota")
    ap.add_argument("--quota", type=float, default=1.5, help="CPUs of the quota condition")
    ap.add_argument("--llama", default="auto", choices=["auto", "off"])
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--out", type=Path, default=HERE / "results.json")
    ap.add_argument("--plot", type=Path, default=None)
    a = ap.parse_args()

    batches = [int(x) for x in a.batches.split(",")]
    conditions = a.conditions.split(",")
    engines = {}
    for e in a.engine:
        name, _, path = e.partition("=")
        if not Path(path).exists():
            raise SystemExit(f"--engine {name}: {path} does not exist")
        engines[name] = ["moeserve", path]
    hf, gguf = a.model_dir / "hf", a.model_dir / "model-bf16.gguf"
    llama_version = llama_importable() if a.llama == "auto" else None
    llama_note = None
    if a.llama == "off":
        llama_note = "disabled (--llama off)"
    elif llama_version is None:
        llama_note = "llama_cpp is not importable in this python"
    elif not gguf.exists():
        llama_note = f"{gguf} missing"
    else:
        engines["llama.cpp"] = ["llama.cpp", None]

    quota = Quota(a.quota) if "quota" in conditions else None
    if quota is not None and quota.dir is None:
        print(f"quota condition skipped: {quota.error}", flush=True)
        conditions = [c for c in conditions if c != "quota"]

    def command(kind, path):
        if kind == "moeserve":
            return [path, "bench", "--model", str(hf), "--threads", str(a.threads), "--prompt", str(a.prompt),
                    "--ctx", str(a.ctx), "--decode", str(a.decode), "--batches", a.batches, "--bs1-probe-gib", "0"]
        return [sys.executable, str(LLAMA_RUN), "--llama-worker", "--gguf", str(gguf), "--threads", str(a.threads),
                "--prompt", str(a.prompt), "--ctx", str(a.ctx), "--decode", str(a.decode), "--batches", a.batches]

    runs = []
    try:
        for rep in range(a.repeats):
            names = list(engines)
            if rep % 2 == 1:
                names.reverse()
            for cond in conditions:
                for name in names:
                    kind, path = engines[name]
                    cmd = command(kind, path)
                    if cond == "quota":
                        cmd = quota.wrap(cmd)
                    before = loadavg()
                    k = int(cond[4:]) if cond.startswith("busy") else 0
                    try:
                        with Busy(k):
                            r = run_json(cmd, a.timeout)
                        err = None
                    except (RuntimeError, subprocess.TimeoutExpired) as e:
                        r, err = None, str(e)[-2000:]
                    rec = {"repeat": rep, "condition": cond, "engine": name, "loadavg_before": before,
                           "loadavg_after": loadavg()}
                    if r is not None:
                        rec["metrics"] = metrics_of(r, batches)
                        rec["raw"] = r
                    else:
                        rec["error"] = err
                    runs.append(rec)
                    shown = {k2: round(v, 1) for k2, v in rec.get("metrics", {}).items()}
                    print(f"[{rep + 1}/{a.repeats}] {cond:6s} {name:10s} {shown or err[:200]}  "
                          f"load {before.split()[0]} -> {rec['loadavg_after'].split()[0]}", flush=True)
    finally:
        if quota is not None:
            quota.close()

    # Summary: per engine and condition, the median over repeats of each metric and of its ratio
    # to the same engine's quiet run in the same repeat.
    keys = ["prefill"] + [f"decode{n}" for n in batches]
    summary = {}
    for name in engines:
        summary[name] = {}
        for cond in conditions:
            rs = [x for x in runs if x["engine"] == name and x["condition"] == cond and "metrics" in x]
            s = {k: median([x["metrics"][k] for x in rs]) for k in keys}
            ratios = {}
            for k in keys:
                rr = []
                for x in rs:
                    q = [y for y in runs if y["engine"] == name and y["condition"] == "quiet"
                         and y["repeat"] == x["repeat"] and "metrics" in y]
                    if q:
                        rr.append(x["metrics"][k] / q[0]["metrics"][k])
                ratios[k] = median(rr)
            s["ratio_to_quiet"] = ratios
            s["loadavg_before"] = [x["loadavg_before"] for x in rs]
            summary[name][cond] = s
    # Engine against engine in the same condition (first --engine against the others).
    first = next(iter(engines))
    versus = {}
    for name in engines:
        if name == first:
            continue
        versus[f"{first}/{name}"] = {
            cond: {k: (summary[first][cond][k] / summary[name][cond][k]
                       if summary[first][cond][k] and summary[name][cond][k] else None) for k in keys}
            for cond in conditions}
    result = {
        "command": " ".join([sys.executable] + sys.argv),
        "machine": {"cpu": cpu_model(), "nproc": os.cpu_count()},
        "commit": git_head(), "threads": a.threads, "prompt_tokens": a.prompt, "ctx_tokens": a.ctx,
        "decode_steps": a.decode, "batches": batches, "conditions": conditions,
        "engines": {n: (e[1] if e[1] else f"llama-cpp-python {llama_version}") for n, e in engines.items()},
        "llama_cpp": llama_note or f"llama-cpp-python {llama_version}",
        "quota": None if quota is None else {"cpus": a.quota, "how": quota.how, "error": quota.error,
                                             "notes": quota.notes},
        "summary": summary, "versus": versus, "runs": runs,
    }
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"summary": {n: {c: {k: (round(v, 3) if isinstance(v, float) else v)
                                              for k, v in s["ratio_to_quiet"].items()}
                                          for c, s in d.items()} for n, d in summary.items()}}, indent=1))
    if a.plot:
        plot(result, keys, a.plot)
    return 0


def plot(result, keys, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    engines = list(result["summary"])
    conds = result["conditions"]
    fig, axes = plt.subplots(2, len(keys), figsize=(4.2 * len(keys), 7.5))
    width = 0.8 / max(1, len(engines))
    for j, k in enumerate(keys):
        for row, what in enumerate(("abs", "ratio")):
            ax = axes[row][j]
            for i, e in enumerate(engines):
                vals = []
                for c in conds:
                    s = result["summary"][e][c]
                    v = s[k] if what == "abs" else s["ratio_to_quiet"][k]
                    vals.append(v or 0)
                ax.bar([x + i * width for x in range(len(conds))], vals, width, label=e)
            ax.set_xticks([x + width * (len(engines) - 1) / 2 for x in range(len(conds))])
            ax.set_xticklabels(conds)
            ax.set_title(f"{k}: {'tokens/s' if what == 'abs' else 'ratio to own quiet run'}", fontsize=9)
            if what == "ratio":
                ax.axhline(1.0, color="gray", lw=0.5)
            if j == 0 and row == 0:
                ax.legend(fontsize=8)
    fig.suptitle(f"moeserve on shared cores, {result['threads']} threads, {result['machine']['cpu']} "
                 f"({result['machine']['nproc']} vCPUs, host shared: see loadavg in the JSON)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    sys.exit(main())
