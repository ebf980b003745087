#!/usr/bin/env python3
"""Per-request KV handoff cost between real `moeserve serve --role prefill|decode` processes.

    python3 benchmarks/disagg_handoff.py --moeserve build/release/src/cli/moeserve \
        --model tests/reference/fixtures/qwen3_moe --prompt-len 200 --requests 20

Starts one prefill and one decode worker (--threads 1 each, UCX KV transport), drives N
requests the way a router does (P.Prefill, then D.Decode with P's result, max_tokens 4) and
prints the decode worker's moe:kv_import_* metrics (bytes and pull + acknowledgement time per
request) next to the prefill worker's TTFT. Needs grpcio and grpcio-tools (the stubs are
generated into a temporary directory).
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc

ap = argparse.ArgumentParser()
ap.add_argument("--moeserve", required=True)
ap.add_argument("--model", required=True)
ap.add_argument("--prompt-len", type=int, default=30)
ap.add_argument("--requests", type=int, default=20)
args = ap.parse_args()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GEN = tempfile.mkdtemp()
for name in ("inference", "control", "worker"):
    if protoc.main(["protoc", "-I" + os.path.join(ROOT, "proto"), "--python_out=" + GEN, "--grpc_python_out=" + GEN,
                    os.path.join(ROOT, "proto", "moe", "v1", name + ".proto")]) != 0:
        sys.exit("protoc failed for " + name)
sys.path.insert(0, GEN)
from moe.v1 import control_pb2 as ctl, control_pb2_grpc as cg, inference_pb2 as inf  # noqa: E402
from moe.v1 import worker_pb2 as w, worker_pb2_grpc as wg  # noqa: E402

BIN, MODEL, PROMPT_LEN, N = args.moeserve, args.model, args.prompt_len, args.requests
def start(role):
    env = dict(os.environ, MOE_INTERNAL_SECRET="s", OMP_NUM_THREADS="1")
    p = subprocess.Popen([BIN, "serve", "--model", MODEL, "--port", "0", "--internal-port", "0", "--role", role, "--threads", "1",
                          "--kv-cache-bytes", str(64 << 20), "--log-level", "warn"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    pub = internal = None
    while pub is None or internal is None:
        line = p.stdout.readline()
        m = re.match(r"moeserve (internal )?listening on (\S+)", line)
        if m:
            if m.group(1): internal = m.group(2)
            else: pub = m.group(2)
    return p, pub, internal
P, ppub, pint = start("prefill"); D, dpub, dint = start("decode")
md = [("authorization", "Bearer s")]
ps = wg.WorkerStub(grpc.insecure_channel(pint)); ds = wg.WorkerStub(grpc.insecure_channel(dint))
ttfts = []
try:
    for i in range(N):
        req = inf.GenerateRequest(token_ids=inf.TokenIds(ids=[(7 * i + 13 * j) % 300 + 1 for j in range(PROMPT_LEN)]))
        req.sampling.temperature = 0; req.stopping.max_tokens = 4; req.stopping.ignore_eos = True
        t0 = time.perf_counter()
        r = ps.Prefill(w.PrefillRequest(request=req, handoff_id=f"h{i}"), metadata=md)
        t1 = time.perf_counter()
        for msg in ds.Decode(w.DecodeRequest(request=req, prefill=r, prefill_worker=pint), metadata=md):
            pass
        t2 = time.perf_counter()
        ttfts.append((r.ttft_seconds, t1 - t0, t2 - t1))
    m = cg.ControlStub(grpc.insecure_channel(dpub)).GetMetrics(ctl.GetMetricsRequest()).text
    for line in m.splitlines():
        if line.startswith("moe:kv_import") and ("_sum" in line or "_count" in line or "total" in line): print(line)
    print("prefill ttft (P's) median %.2f ms; Prefill RPC median %.2f ms; Decode RPC (pull + 3 decode steps) median %.2f ms" % (
        1e3 * statistics.median(x[0] for x in ttfts), 1e3 * statistics.median(x[1] for x in ttfts), 1e3 * statistics.median(x[2] for x in ttfts)))
finally:
    P.kill(); D.kill()
