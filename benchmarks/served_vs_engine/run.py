#!/usr/bin/env python3
"""Served throughput against the engine's own, same workload, same machine, same run (issue 6).

    run.py --build-dir build/cpu-release --model /tmp/moeserve_cpu_vs_llamacpp/moe-s/hf \
           --concurrency 1,16 --repeats 3 --out results.json

For each repeat and each concurrency C, in this order (A/B, one process at a time):
  A  `moe_engine_bench engine ...`: `moeserve bench`'s closed-loop workload submitted to an
     in-process Engine (scheduler + sampler + model, no gRPC). Then, in the same process, the
     "bare loop": the same requests through the engine's Scheduler driving model.forward directly,
     forward passes timed (what the step loop costs around the model).
  B  `moeserve serve --model DIR --threads T --port 0 --kv-cache-bytes B`, waited for (its
     "listening" line, then grpc.health.v1 readiness of moe.v1.Inference), then `moeserve bench`
     with the identical workload (same seed, so the same prompt ids), then SIGTERM and a check
     that the server drained and exited 0.
Both sides run W warm-up requests first (seed + 1, same lengths, untimed), so neither times the
first touch of the mapped weights. The server's engine step count for the timed part comes from
Control.GetLoad before and after.

Figures are medians over the repeats; the JSON keeps every raw figure, the load average after
each measurement and the machine. OMP_NUM_THREADS=T and OMP_WAIT_POLICY=passive are set for
every child (as the other benchmarks do on this shared host).

Needs Python's grpcio (health and GetLoad are called with hand-encoded protobuf bytes, so no
generated stubs are needed).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DEFAULT_MODEL = "/tmp/moeserve_cpu_vs_llamacpp/moe-s/hf"


# ---- tiny protobuf helpers (only varint fields and one string) -------------------------------

def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def decode_varint_fields(buf: bytes) -> dict[int, int]:
    """Field number -> value for a message whose fields are all varints (moe.v1.Load)."""
    out, i = {}, 0
    while i < len(buf):
        key, i = _varint(buf, i)
        if key & 7 != 0:
            raise ValueError(f"field {key >> 3}: wire type {key & 7}, expected varint")
        out[key >> 3], i = _varint(buf, i)
    return out


def raw_unary(channel, method: str, request: bytes, timeout: float) -> bytes:
    call = channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    return call(request, timeout=timeout)


def health_serving(channel, service: str) -> bool:
    import grpc
    name = service.encode()
    try:  # HealthCheckRequest{service = name}; HealthCheckResponse{status = 1 (SERVING)}
        resp = raw_unary(channel, "/grpc.health.v1.Health/Check", b"\x0a" + bytes([len(name)]) + name, 2.0)
    except grpc.RpcError:
        return False
    return decode_varint_fields(resp).get(1) == 1


LOAD_FIELDS = {1: "num_waiting", 2: "num_running", 3: "num_pending", 4: "kv_blocks_total", 5: "kv_blocks_free",
               6: "kv_blocks_cached", 7: "kv_block_size", 8: "num_preemptions", 9: "num_steps",
               10: "num_generated_tokens", 11: "draining"}


def get_load(channel) -> dict:
    fields = decode_varint_fields(raw_unary(channel, "/moe.v1.Control/GetLoad", b"", 10.0))
    return {name: fields.get(num, 0) for num, name in LOAD_FIELDS.items()}


# ---- machine ------------------------------------------------------------------------------

def loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def machine_info() -> dict:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((l.split(":", 1)[1].strip() for l in lscpu.splitlines() if l.startswith("Model name")), "?")
    git = lambda *a: subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True).stdout.strip()
    return {
        "cpu_model": model,
        "nproc": int(subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()),
        "mem_total_kib": next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal:")),
        "kernel": os.uname().release,
        "git_head": git("rev-parse", "HEAD"),
        "git_dirty_files": git("status", "--porcelain", "--untracked-files=no").splitlines(),
        "loadavg_start": loadavg(),
    }


def proc_status_kib(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


CLK_TCK = os.sysconf("SC_CLK_TCK")


def task_cpu_s(pid: int) -> dict[int, tuple[str, float]]:
    """tid -> (thread name, user + system CPU seconds) for every thread of pid."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # the thread ended meanwhile
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(tid)] = (comm, (int(fields[11]) + int(fields[12])) / CLK_TCK)  # utime, stime
    return out


def cpu_by_thread_name(before: dict, after: dict) -> dict[str, float]:
    by_name: dict[str, float] = {}
    for tid, (comm, cpu) in after.items():
        by_name[comm] = by_name.get(comm, 0.0) + cpu - before.get(tid, (comm, 0.0))[1]
    return by_name


def children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# ---- the two sides ----------------------------------------------------------------------------

def run_engine(a, conc: int, env: dict) -> dict:
    cmd = [str(a.engine_bench), "engine", "--model", a.model, "--threads", str(a.threads),
           "--num-requests", str(a.num_requests), "--concurrency", str(conc), "--input-len", str(a.input_len),
           "--output-len", str(a.output_len), "--seed", str(a.seed), "--kv-cache-bytes", str(a.kv_cache_bytes),
           "--warmup-requests", str(a.warmup_requests), "--bare-loop", str(a.bare_loop)]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=a.timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stderr[-3000:]}")
    j = json.loads(p.stdout.strip().splitlines()[-1])
    j["command"] = cmd
    j["process_seconds"] = time.time() - t0
    j["loadavg_after"] = loadavg()
    return j


def bench_means(bench_json: dict) -> dict:
    """Mean TTFT and mean ITL (pooled over tokens, as moe_engine_bench reports them) from the
    per-request records of `moeserve bench --output`."""
    reqs = [r for r in bench_json["requests"] if not r["error"]]
    ttft = [r["ttft_seconds"] for r in reqs if r["ttft_seconds"] is not None]
    n_itl = sum(max(r["output_tokens"] - 1, 0) for r in reqs)
    itl = sum(r["mean_itl_seconds"] * max(r["output_tokens"] - 1, 0) for r in reqs)
    e2e = [r["e2e_seconds"] for r in reqs]
    return {"ttft_mean_s": statistics.fmean(ttft) if ttft else None,
            "itl_mean_s": itl / n_itl if n_itl else None,
            "e2e_mean_s": statistics.fmean(e2e) if e2e else None}


class Server:
    """`moeserve serve` as a child process; stdout read for the listening line, stderr to a file."""

    def __init__(self, a, env: dict, log_path: Path):
        self.cmd = [str(a.moeserve), "serve", "--model", a.model, "--threads", str(a.threads), "--port", "0",
                    "--kv-cache-bytes", str(a.kv_cache_bytes)]
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        self.address = None
        self._lines: list[str] = []
        got = threading.Event()

        def reader():
            for line in self.proc.stdout:
                self._lines.append(line)
                m = re.match(r"moeserve listening on (\S+)", line)
                if m and self.address is None:
                    self.address = m.group(1)
                    got.set()
            got.set()

        threading.Thread(target=reader, daemon=True).start()
        if not got.wait(a.start_timeout) or self.address is None:
            self.stop()
            raise RuntimeError(f"{' '.join(self.cmd)}: no listening line (exit {self.proc.poll()}); "
                               f"stderr in {log_path}")

    def wait_ready(self, channel, timeout: float) -> float:
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode} before it was ready")
            if health_serving(channel, "moe.v1.Inference"):
                return time.time() - t0
            time.sleep(0.1)
        raise RuntimeError("server not ready (grpc.health.v1 moe.v1.Inference) within the timeout")

    def stop(self, timeout: float = 120) -> int | None:
        """SIGTERM (drain), then wait; returns the exit code (None if it had to be killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.log.close()
                return None
        self.log.close()
        return self.proc.returncode


def run_served(a, conc: int, env: dict, workdir: Path, tag: str) -> dict:
    import grpc
    server = Server(a, env, workdir / f"serve-{tag}.log")
    out: dict = {"serve_command": server.cmd, "address": server.address}
    try:
        channel = grpc.insecure_channel(server.address)
        out["ready_after_listening_s"] = server.wait_ready(channel, a.start_timeout)
        base = [str(a.moeserve), "bench", "--server", server.address, "--input-len", str(a.input_len),
                "--output-len", str(a.output_len)]
        if a.warmup_requests > 0:
            warm = base + ["--num-requests", str(a.warmup_requests), "--concurrency",
                           str(min(conc, a.warmup_requests)), "--seed", str(a.seed + 1)]
            p = subprocess.run(warm, capture_output=True, text=True, env=env, timeout=a.timeout)
            if p.returncode != 0:
                raise RuntimeError(f"warm-up bench exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
        timings = workdir / f"bench-{tag}.json"
        cmd = base + ["--num-requests", str(a.num_requests), "--concurrency", str(conc), "--seed", str(a.seed),
                      "--output", str(timings)]
        load_before = get_load(channel)
        tasks_before, client_cpu0 = task_cpu_s(server.proc.pid), children_cpu_s()
        t0 = time.time()
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=a.timeout)
        out["process_seconds"] = time.time() - t0
        tasks_after, client_cpu1 = task_cpu_s(server.proc.pid), children_cpu_s()
        load_after = get_load(channel)
        # Thread names: "moeserve" is the main thread, the engine thread and the compute pool
        # (unnamed, so they keep the program's name); the rest are gRPC's own threads.
        by_name = cpu_by_thread_name(tasks_before, tasks_after)
        out["server_cpu_s_by_thread_name"] = by_name
        out["server_cpu_s"] = sum(by_name.values())
        out["server_grpc_threads_cpu_s"] = sum(v for k, v in by_name.items() if k != "moeserve")
        out["client_cpu_s"] = client_cpu1 - client_cpu0
        out["bench_command"] = cmd
        out["bench_exit_code"] = p.returncode
        out["bench_stdout"] = p.stdout
        if p.returncode not in (0, 1):  # 1: some requests failed, still reported below
            raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
        bench = json.loads(timings.read_text())
        out["summary"] = bench["summary"]
        out.update(bench_means(bench))
        out["requests"] = bench["requests"]
        out["server_steps"] = load_after["num_steps"] - load_before["num_steps"]
        out["server_generated_tokens"] = load_after["num_generated_tokens"] - load_before["num_generated_tokens"]
        out["server_preemptions"] = load_after["num_preemptions"] - load_before["num_preemptions"]
        out["server_load_after"] = load_after
        out["server_vm_hwm_kib"] = proc_status_kib(server.proc.pid, "VmHWM")
        out["server_alive_after_bench"] = server.proc.poll() is None
        channel.close()
    finally:
        rc = server.stop()
        out["server_exit_code"] = rc
    out["loadavg_after"] = loadavg()
    return out


# ---- report -------------------------------------------------------------------------------------

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(runs: list[dict], concurrencies: list[int]) -> dict:
    s = {}
    for c in concurrencies:
        rs = [r for r in runs if r["concurrency"] == c]
        eng = [r["engine"] for r in rs]
        srv = [r["served"] for r in rs]
        e_tps = [e["output_tokens_per_second"] for e in eng]
        s_tps = [x["summary"]["output_tokens_per_second"] for x in srv]
        bare = [e["bare_loop"] for e in eng if e.get("bare_loop")]
        s[str(c)] = {
            "engine_output_tps": e_tps,
            "served_output_tps": s_tps,
            "engine_output_tps_median": med(e_tps),
            "served_output_tps_median": med(s_tps),
            "served_over_engine_of_medians": med(s_tps) / med(e_tps),
            "served_over_engine_paired": [b / a for a, b in zip(e_tps, s_tps)],
            "served_over_engine_paired_median": med([b / a for a, b in zip(e_tps, s_tps)]),
            "engine_request_throughput_median": med([e["request_throughput"] for e in eng]),
            "served_request_throughput_median": med([x["summary"]["request_throughput"] for x in srv]),
            "engine_ttft_mean_s_median": med([e["ttft_mean_s"] for e in eng]),
            "served_ttft_mean_s_median": med([x["ttft_mean_s"] for x in srv]),
            "engine_itl_mean_s_median": med([e["itl_mean_s"] for e in eng]),
            "served_itl_mean_s_median": med([x["itl_mean_s"] for x in srv]),
            "engine_steps_median": med([e["engine_steps"] for e in eng]),
            "served_steps_median": med([x["server_steps"] for x in srv]),
            "bare_loop_output_tps_median": med([b["output_tokens_per_second"] for b in bare]),
            "forward_only_output_tps_median": med([b["forward_only_output_tokens_per_second"] for b in bare]),
            "bare_loop_steps_median": med([b["steps"] for b in bare]),
            "bare_loop_forward_fraction_median": med([b["forward_fraction"] for b in bare]),
            "engine_over_bare_loop_paired_median": med([e["output_tokens_per_second"] /
                                                        e["bare_loop"]["output_tokens_per_second"]
                                                        for e in eng if e.get("bare_loop")]),
            "engine_cpu_ms_per_output_token_median": med([1e3 * e["cpu_s"] / e["output_tokens"] for e in eng]),
            "served_server_cpu_ms_per_output_token_median": med([1e3 * x["server_cpu_s"] /
                                                                 x["summary"]["output_tokens"] for x in srv]),
            "served_grpc_threads_cpu_ms_per_output_token_median": med([1e3 * x["server_grpc_threads_cpu_s"] /
                                                                       x["summary"]["output_tokens"] for x in srv]),
            "served_client_cpu_ms_per_output_token_median": med([1e3 * x["client_cpu_s"] /
                                                                 x["summary"]["output_tokens"] for x in srv]),
            "bare_loop_cpu_ms_per_output_token_median": med([1e3 * b["cpu_s"] / b["output_tokens"] for b in bare]),
            "errors_engine": sum(e["errors"] for e in eng),
            "errors_served": sum(x["summary"]["errors"] for x in srv),
            "server_exit_codes": [x["server_exit_code"] for x in srv],
            "engine_vm_hwm_kib_median": med([e["vm_hwm_kib"] for e in eng]),
            "server_vm_hwm_kib_median": med([x["server_vm_hwm_kib"] for x in srv]),
            "loadavg_1min_after": [[r["engine"]["loadavg_after"][0], r["served"]["loadavg_after"][0]] for r in rs],
        }
    return s


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def print_table(summary: dict) -> None:
    rows = [
        ("output tok/s: forward only (bare loop)", "forward_only_output_tps_median", ".1f"),
        ("output tok/s: bare loop (scheduler + forward)", "bare_loop_output_tps_median", ".1f"),
        ("output tok/s: engine in-process", "engine_output_tps_median", ".1f"),
        ("output tok/s: served (gRPC)", "served_output_tps_median", ".1f"),
        ("served / engine (ratio of medians)", "served_over_engine_of_medians", ".3f"),
        ("served / engine (median of paired runs)", "served_over_engine_paired_median", ".3f"),
        ("engine / bare loop (median of paired)", "engine_over_bare_loop_paired_median", ".3f"),
        ("request/s: engine", "engine_request_throughput_median", ".3f"),
        ("request/s: served", "served_request_throughput_median", ".3f"),
        ("mean TTFT s: engine", "engine_ttft_mean_s_median", ".4f"),
        ("mean TTFT s: served", "served_ttft_mean_s_median", ".4f"),
        ("mean ITL s: engine", "engine_itl_mean_s_median", ".4f"),
        ("mean ITL s: served", "served_itl_mean_s_median", ".4f"),
        ("CPU ms / output token: bare loop", "bare_loop_cpu_ms_per_output_token_median", ".2f"),
        ("CPU ms / output token: engine process", "engine_cpu_ms_per_output_token_median", ".2f"),
        ("CPU ms / output token: server process", "served_server_cpu_ms_per_output_token_median", ".2f"),
        ("  of which gRPC's own threads", "served_grpc_threads_cpu_ms_per_output_token_median", ".3f"),
        ("CPU ms / output token: bench client", "served_client_cpu_ms_per_output_token_median", ".3f"),
        ("engine steps: bare loop", "bare_loop_steps_median", ".0f"),
        ("engine steps: engine", "engine_steps_median", ".0f"),
        ("engine steps: served", "served_steps_median", ".0f"),
        ("errors: engine / served", None, None),
    ]
    cs = list(summary)
    print("| median of repeats | " + " | ".join(f"concurrency {c}" for c in cs) + " |")
    print("|---|" + "---|" * len(cs))
    for label, key, spec in rows:
        if key is None:
            cells = [f"{summary[c]['errors_engine']} / {summary[c]['errors_served']}" for c in cs]
        else:
            cells = [fmt(summary[c][key], spec) for c in cs]
        print(f"| {label} | " + " | ".join(cells) + " |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=str(HERE.parent.parent / "build" / "cpu-release"))
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--out", default="results.json")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--num-requests", type=int, default=32)
    ap.add_argument("--concurrency", default="1,16", help="comma-separated")
    ap.add_argument("--input-len", type=int, default=64)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--kv-cache-bytes", type=int, default=256 << 20,
                    help="the same KV cache for both sides (default 256 MiB: 512 blocks of 16 tokens on moe-s)")
    ap.add_argument("--warmup-requests", type=int, default=2)
    ap.add_argument("--bare-loop", type=int, default=1, choices=(0, 1))
    ap.add_argument("--timeout", type=float, default=3600, help="per benchmark process, seconds")
    ap.add_argument("--start-timeout", type=float, default=300, help="server start and readiness, seconds")
    a = ap.parse_args()

    build = Path(a.build_dir)
    a.moeserve = build / "src/cli/moeserve"
    a.engine_bench = build / "benchmarks/moe_engine_bench"
    for b in (a.moeserve, a.engine_bench):
        if not b.exists():
            sys.exit(f"{b} is missing: cmake --build {build} --target moeserve moe_engine_bench")
    if not (Path(a.model) / "config.json").exists():
        hint = ""
        if a.model == DEFAULT_MODEL:
            hint = (f"\nmake it with: python3 {REPO}/benchmarks/cpu_vs_llamacpp/make_models.py --shape moe-s "
                    f"--out {Path(DEFAULT_MODEL).parent}")
        sys.exit(f"no model at {a.model}{hint}")
    concurrencies = [int(c) for c in a.concurrency.split(",")]
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), OMP_WAIT_POLICY="passive")

    result = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "env": {"OMP_NUM_THREADS": env["OMP_NUM_THREADS"], "OMP_WAIT_POLICY": env["OMP_WAIT_POLICY"]},
        "runs": [],
    }
    workdir = Path(tempfile.mkdtemp(prefix="served_vs_engine."))
    print(f"served_vs_engine: logs and per-request timings in {workdir}", file=sys.stderr)
    for rep in range(1, a.repeats + 1):
        for c in concurrencies:
            tag = f"r{rep}-c{c}"
            print(f"[{tag}] engine in-process ...", file=sys.stderr, flush=True)
            eng = run_engine(a, c, env)
            print(f"[{tag}]   {eng['output_tokens_per_second']:.1f} output tok/s, {eng['errors']} errors, "
                  f"load {eng['loadavg_after']}", file=sys.stderr, flush=True)
            print(f"[{tag}] served ...", file=sys.stderr, flush=True)
            srv = run_served(a, c, env, workdir, tag)
            print(f"[{tag}]   {srv['summary']['output_tokens_per_second']:.1f} output tok/s, "
                  f"{srv['summary']['errors']} errors, server exit {srv['server_exit_code']}, "
                  f"load {srv['loadavg_after']}", file=sys.stderr, flush=True)
            result["runs"].append({"repeat": rep, "concurrency": c, "engine": eng, "served": srv})
            Path(a.out).write_text(json.dumps(result, indent=1))  # partial results survive a failure
    result["summary"] = summarize(result["runs"], concurrencies)
    result["machine"]["loadavg_end"] = loadavg()
    Path(a.out).write_text(json.dumps(result, indent=1))
    print(f"moe model {a.model}, {a.threads} threads, {a.num_requests} requests, input {a.input_len}, "
          f"output {a.output_len}, {a.repeats} repeats; {result['machine']['cpu_model']}, "
          f"nproc {result['machine']['nproc']}")
    print_table(result["summary"])
    print(f"raw figures: {a.out}")
    bad = any(s["errors_engine"] or s["errors_served"] or any(rc != 0 for rc in s["server_exit_codes"])
              for s in result["summary"].values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
