#!/usr/bin/env python3
"""Soak test: N minutes of mixed traffic against `moeserve serve` on 127.0.0.1 (#18).

    pip install -r examples/requirements.txt        # grpcio, grpcio-tools
    python3 benchmarks/soak/soak.py --moeserve build/cpu-release/src/cli/moeserve --minutes 30 \\
        --threads 1 --out benchmarks/soak/results-$(date -u +%F).json

Starts the server (built-in demo model, a tiny KV cache of small blocks so that concurrent
requests force preemption), then runs --workers client threads, each looping over a random mix:
streams (token ids or text, some with logprobs or stop strings), client cancels mid-stream,
short deadlines, Control.Abort of its own request, and bad requests (out-of-range fields,
invalid UTF-8, garbage protobuf bytes). Every --sample-seconds it samples the server's RSS and
open file descriptors (/proc) and GetLoad (KV free blocks, pending, preemptions). At the end it
stops the traffic, waits for the server to go idle, takes a last sample, sends SIGTERM and judges:

  * RSS flat: the idle RSS at the end is within max(--rss-slack-mib, 10 %) of the first sample
    taken after --warmup-seconds (allocator pools and caches fill during warm-up);
  * fds flat: the idle fd count at the end is within 4 of the post-warm-up sample;
  * KV: every block is free once idle, nothing pending;
  * every request got an expected outcome, and the server exits 0 on SIGTERM.

Loopback only; every loop is bounded by the deadline; the server is killed if it does not stop.
Exit status 0 when the verdict is "flat", 1 otherwise.
"""
import argparse
import importlib.util
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))


def load_stubs():
    spec = importlib.util.spec_from_file_location("python_client", os.path.join(ROOT, "examples", "python_client.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.load_stubs(os.path.join(ROOT, "proto"))


def start_server(a):
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    cmd = [a.moeserve, "serve", "--host", "127.0.0.1", "--port", "0", "--threads", str(a.threads),
           "--kv-cache-bytes", str(a.kv_cache_bytes), "--kv-block-size", "4", "--max-seqs", "8",
           "--max-model-len", "256", "--drain-grace-seconds", "5"]
    log = open(a.server_log, "w")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    addr = {}
    ready = threading.Event()

    def read_stdout():
        for line in proc.stdout:
            m = re.match(r"moeserve listening on (\S+)", line)
            if m:
                addr["a"] = m.group(1)
                ready.set()

    threading.Thread(target=read_stdout, daemon=True).start()
    if not ready.wait(180):
        proc.kill()
        raise SystemExit("the server printed no 'moeserve listening on' line; see " + a.server_log)
    return proc, addr["a"]


def proc_sample(pid):
    rss_kib = None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kib = int(line.split()[1])
    return rss_kib, len(os.listdir(f"/proc/{pid}/fd"))


class Counters:
    def __init__(self):
        self.mu = threading.Lock()
        self.outcomes = {}
        self.unexpected = []

    def add(self, kind, outcome, expected=True, detail=""):
        with self.mu:
            key = f"{kind}:{outcome}"
            self.outcomes[key] = self.outcomes.get(key, 0) + 1
            if not expected and len(self.unexpected) < 50:
                self.unexpected.append(f"{key} {detail[:200]}")


def worker(idx, a, addr, stubs, counters, stop_at, vocab):
    import grpc
    pb2, pb2_grpc, cpb2, cpb2_grpc = stubs
    rng = random.Random(a.seed * 1000 + idx)
    channel = grpc.insecure_channel(addr, options=[("grpc.use_local_subchannel_pool", 1)])
    inf = pb2_grpc.InferenceStub(channel)
    ctl = cpb2_grpc.ControlStub(channel)
    n = 0

    def request(max_tokens, text=None, logprobs=0, stop=None, rid=b""):
        r = pb2.GenerateRequest(request_id=rid)
        if text is not None:
            r.text = text.encode()
        else:
            r.token_ids.ids.extend(rng.randrange(1, vocab) for _ in range(rng.randrange(1, 40)))
        r.sampling.temperature = rng.choice([0.0, 0.7, 1.0])
        r.sampling.seed = rng.randrange(1 << 32)
        r.stopping.max_tokens = max_tokens
        r.stopping.ignore_eos = rng.random() < 0.5
        if stop:
            r.stopping.stop.extend(s.encode() for s in stop)
        if logprobs:
            r.output.logprobs = logprobs
        return r

    while time.time() < stop_at:
        n += 1
        op = rng.random()
        try:
            if op < 0.50:  # a stream read to the end
                text = rng.choice([None, "Hello soak " * rng.randrange(1, 8)])
                req = request(rng.randrange(4, 64), text=text, logprobs=rng.choice([0, 0, 5, 20]),
                              stop=rng.choice([None, ["zz"], ["a", "the"]]) if text else None)
                fin = None
                for msg in inf.Generate(req, timeout=120):
                    if msg.HasField("final"):
                        fin = msg.final
                reason = pb2.FinishReason.Name(fin.finish_reason) if fin else "NO_FINAL"
                counters.add("stream", reason, reason in ("FINISH_REASON_LENGTH", "FINISH_REASON_STOP"))
            elif op < 0.62:  # client cancel mid-stream
                call = inf.Generate(request(200), timeout=120)
                for i, _ in enumerate(call):
                    if i >= rng.randrange(1, 4):
                        break
                call.cancel()
                counters.add("cancel", "client_cancelled")
            elif op < 0.72:  # deadline
                try:
                    for _ in inf.Generate(request(200), timeout=rng.uniform(0.05, 0.6)):
                        pass
                    counters.add("deadline", "finished_in_time")
                except grpc.RpcError as e:
                    counters.add("deadline", e.code().name, e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e.details())
            elif op < 0.80:  # Control.Abort of its own request, on its own connection
                rid = f"soak-{idx}-{n}".encode()
                call = inf.Generate(request(200, rid=rid), timeout=120)
                fin = None
                for i, msg in enumerate(call):
                    if i == 0:
                        ctl.Abort(cpb2.AbortRequest(request_id=rid), timeout=30)
                    if msg.HasField("final"):
                        fin = msg.final
                reason = pb2.FinishReason.Name(fin.finish_reason) if fin else "NO_FINAL"
                # STOP or LENGTH: the request ended (EOS, max_tokens) before the abort reached it.
                counters.add("abort", reason,
                             reason in ("FINISH_REASON_CANCELLED", "FINISH_REASON_LENGTH", "FINISH_REASON_STOP"))
            else:  # bad requests: must be INVALID_ARGUMENT
                kind = rng.randrange(6)
                try:
                    if kind == 5:
                        raw = channel.unary_stream("/moe.v1.Inference/Generate", request_serializer=None,
                                                   response_deserializer=None)
                        for _ in raw(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))) + b"\xff\xff",
                                     timeout=30):
                            pass
                        counters.add("bad", "accepted_garbage", True)  # some random bytes are valid protobuf
                        continue
                    req = request(4)
                    if kind == 0:
                        req.sampling.temperature = -1.0
                    elif kind == 1:
                        req.request_id = b"bad\xff\xfeid"
                    elif kind == 2:
                        req.request_id = b"x" * 200
                    elif kind == 3:
                        req.sampling.top_p = 0.0
                    else:
                        req.stopping.max_tokens = 100000
                    for _ in inf.Generate(req, timeout=30):
                        pass
                    counters.add("bad", "accepted", False, f"kind {kind}")
                except grpc.RpcError as e:
                    counters.add("bad", e.code().name, e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.details())
        except grpc.RpcError as e:
            counters.add("error", e.code().name, False, e.details())
    channel.close()


def get_load(stubs, addr):
    import grpc
    _, _, cpb2, cpb2_grpc = stubs
    with grpc.insecure_channel(addr) as ch:
        l = cpb2_grpc.ControlStub(ch).GetLoad(cpb2.GetLoadRequest(), timeout=30)
    return {"kv_blocks_free": l.kv_blocks_free, "kv_blocks_total": l.kv_blocks_total, "pending": l.num_pending,
            "running": l.num_running, "preemptions": l.num_preemptions, "generated_tokens": l.num_generated_tokens,
            "steps": l.num_steps}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--moeserve", required=True)
    p.add_argument("--minutes", type=float, default=30)
    p.add_argument("--threads", type=int, default=1, help="the server's compute threads")
    p.add_argument("--workers", type=int, default=6, help="client threads")
    p.add_argument("--sample-seconds", type=float, default=60)
    p.add_argument("--warmup-seconds", type=float, default=60)
    p.add_argument("--kv-cache-bytes", type=int, default=512 << 10, help="tiny: forces preemption")
    p.add_argument("--rss-slack-mib", type=float, default=16)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=None, help="JSON results file")
    p.add_argument("--server-log", default="/tmp/moeserve-soak.log")
    a = p.parse_args()
    if a.minutes <= 0 or a.minutes > 24 * 60:
        raise SystemExit("--minutes must be in (0, 1440]")

    stubs = load_stubs()
    proc, addr = start_server(a)
    import grpc
    with grpc.insecure_channel(addr) as ch:
        vocab = stubs[3].ControlStub(ch).GetModelInfo(stubs[2].GetModelInfoRequest(), timeout=30).vocab_size
    if not addr.startswith("127.0.0.1:"):
        proc.kill()
        raise SystemExit("the server is not on loopback: " + addr)
    counters = Counters()
    t0 = time.time()
    stop_at = t0 + a.minutes * 60
    samples = []

    def sample(phase):
        rss, fds = proc_sample(proc.pid)
        s = {"t_seconds": round(time.time() - t0, 1), "phase": phase, "rss_mib": round(rss / 1024, 1), "fds": fds}
        s.update(get_load(stubs, addr))
        samples.append(s)
        print(json.dumps(s), flush=True)

    sample("start")
    threads = [threading.Thread(target=worker, args=(i, a, addr, stubs, counters, stop_at, vocab), daemon=True)
               for i in range(a.workers)]
    for t in threads:
        t.start()
    next_sample = t0 + a.sample_seconds
    while time.time() < stop_at:
        time.sleep(min(1.0, max(0.0, stop_at - time.time())))
        if proc.poll() is not None:
            break
        if time.time() >= next_sample:
            sample("traffic")
            next_sample += a.sample_seconds
    for t in threads:
        t.join(timeout=180)
    alive = proc.poll() is None
    idle = False
    if alive:
        for _ in range(300):  # up to 30 s for the last requests to end
            l = get_load(stubs, addr)
            if l["pending"] == 0 and l["kv_blocks_free"] == l["kv_blocks_total"]:
                idle = True
                break
            time.sleep(0.1)
        time.sleep(1.0)
        sample("idle")
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = "killed"
    else:
        rc = proc.returncode

    reasons = []
    warm = next((s for s in samples if s["t_seconds"] >= a.warmup_seconds), samples[0])
    end = samples[-1]
    rss_values = [s["rss_mib"] for s in samples]
    slack = max(a.rss_slack_mib, 0.10 * warm["rss_mib"])
    if not alive:
        reasons.append(f"the server died during the soak (exit {rc})")
    if end["rss_mib"] - warm["rss_mib"] > slack:
        reasons.append(f"RSS grew {end['rss_mib'] - warm['rss_mib']:.1f} MiB after warm-up (slack {slack:.1f})")
    if end["fds"] - warm["fds"] > 4:
        reasons.append(f"open fds grew from {warm['fds']} to {end['fds']}")
    if not idle or end["kv_blocks_free"] != end["kv_blocks_total"] or end["pending"] != 0:
        reasons.append(f"not idle at the end: {end['kv_blocks_free']}/{end['kv_blocks_total']} KV blocks free, "
                       f"{end['pending']} pending")
    if counters.unexpected:
        reasons.append(f"{len(counters.unexpected)}+ unexpected outcomes")
    if rc != 0:
        reasons.append(f"SIGTERM exit status {rc}")
    if end["preemptions"] == 0:
        reasons.append("no preemption happened: the KV cache was not small enough to test it")
    total = sum(counters.outcomes.values())
    result = {
        "minutes": a.minutes, "server_threads": a.threads, "workers": a.workers, "seed": a.seed,
        "kv_cache_bytes": a.kv_cache_bytes, "requests": total,
        "outcomes": dict(sorted(counters.outcomes.items())), "unexpected": counters.unexpected,
        "rss_mib": {"start": samples[0]["rss_mib"], "after_warmup": warm["rss_mib"], "end_idle": end["rss_mib"],
                    "max": max(rss_values)},
        "fds": {"start": samples[0]["fds"], "after_warmup": warm["fds"], "end_idle": end["fds"],
                "max": max(s["fds"] for s in samples)},
        "kv_blocks": {"total": end["kv_blocks_total"], "free_end_idle": end["kv_blocks_free"],
                      "min_free_sampled": min(s["kv_blocks_free"] for s in samples)},
        "preemptions": end["preemptions"], "generated_tokens": end["generated_tokens"],
        "sigterm_exit": rc, "verdict": "flat" if not reasons else "NOT flat", "reasons": reasons,
        "samples": samples,
    }
    text = json.dumps(result, indent=2)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
    return 0 if not reasons else 1


if __name__ == "__main__":
    sys.exit(main())
