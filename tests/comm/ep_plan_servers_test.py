#!/usr/bin/env python3
"""`moeserve ep-plan --servers`: the counts of a running expert-parallel group, summed over its
ranks, planned, and the plan accepted by the group's own loader.

Starts `mpirun -np 2 moeserve serve --expert-parallel` on a fixture, sends one greedy request to
each rank, then checks that ep-plan (1) sums both ranks' GetLoad counts: every MoE layer counts
exactly tokens x top-k, the tokens being each prompt plus all generated tokens but the last;
(2) writes a placement that `mpirun -np 2 moeserve run --expert-parallel --ep-placement` loads
and runs to the same greedy ids as the plain run.
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
import time

MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", "2"]


def fail(msg: str) -> None:
    print(f"ep_plan_servers_test: FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--moeserve", required=True)
    ap.add_argument("--model", required=True)
    a = ap.parse_args()
    env = dict(os.environ, OMPI_MCA_btl_vader_single_copy_mechanism="none", OMP_NUM_THREADS="1")
    cfg = json.load(open(os.path.join(a.model, "config.json")))
    top_k = cfg["num_experts_per_tok"]
    prompts = {"1,2,3,4,5": 8, "9,8,7": 6}
    port = 20000 + os.getpid() % 20000
    with tempfile.TemporaryDirectory() as tmp:
        log = open(os.path.join(tmp, "serve.log"), "w+")
        srv = subprocess.Popen(MPIRUN + [a.moeserve, "serve", "--expert-parallel", "--threads", "1", "--comm-timeout",
                                         "20", "--model", a.model, "--port", str(port)],
                               stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            addrs = []
            deadline = time.monotonic() + 120
            while len(addrs) < 2:
                if time.monotonic() > deadline or srv.poll() is not None:
                    log.seek(0)
                    fail("the group did not start serving:\n" + log.read())
                time.sleep(0.5)
                log.seek(0)
                addrs = sorted(set(re.findall(r"moeserve listening on (\S+)", log.read())))
            for addr, (ids, n) in zip(addrs, prompts.items()):
                r = subprocess.run([a.moeserve, "generate", "--server", addr, "--prompt-ids", ids, "--max-tokens",
                                    str(n), "--ignore-eos"], capture_output=True, text=True, timeout=120, env=env)
                if r.returncode != 0:
                    fail(f"generate on {addr}: {r.stderr}")
            counts_path, plan_path = os.path.join(tmp, "counts.json"), os.path.join(tmp, "plan.json")
            r = subprocess.run([a.moeserve, "ep-plan", "--servers", ",".join(addrs), "--save-counts", counts_path,
                                "--world-size", "2", "--redundant", "2", "-o", plan_path],
                               capture_output=True, text=True, timeout=60, env=env)
            if r.returncode != 0:
                fail(f"ep-plan --servers: {r.stdout}{r.stderr}")
        finally:
            os.killpg(srv.pid, signal.SIGTERM)
            try:
                srv.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(srv.pid, signal.SIGKILL)
        counts = json.load(open(counts_path))
        tokens = sum(len(ids.split(",")) + n - 1 for ids, n in prompts.items())
        if not counts["layers"]:
            fail("no MoE layer was counted")
        for layer in counts["layers"]:
            if sum(layer["counts"]) != tokens * top_k:
                fail(f"layer {layer['layer']}: counts sum to {sum(layer['counts'])}, want {tokens} tokens x top-{top_k}")
        plan = json.load(open(plan_path))
        slots = [len(rank) for layer in plan["layers"] for rank in layer["ranks"]]
        if not plan["layers"] or sum(slots) != len(plan["layers"]) * (cfg["num_experts"] + 2):
            fail(f"the plan does not hold E + 2 slots per planned layer: {plan}")
        # The group loads the plan and computes what the plain run computes.
        ids = "3,1,4,1,5,9,2,6"
        plain = subprocess.run([a.moeserve, "run", "--model", a.model, "--threads", "1", "--prompt-ids", ids,
                                "--max-tokens", "8", "--ignore-eos"], capture_output=True, text=True, timeout=120,
                               env=env)
        ep = subprocess.run(MPIRUN + [a.moeserve, "run", "--expert-parallel", "--threads", "1", "--ep-placement",
                                      plan_path, "--model", a.model, "--prompt-ids", ids, "--prompt-ids", "7,7,7",
                                      "--max-tokens", "8", "--ignore-eos"],
                            capture_output=True, text=True, timeout=180, env=env)
        if plain.returncode != 0 or ep.returncode != 0:
            fail(f"run failed: {plain.stderr[-2000:]}{ep.stderr[-2000:]}")
        if ep.stdout.splitlines()[0] != plain.stdout.splitlines()[0]:
            fail(f"the planned placement changed the result: {ep.stdout.splitlines()[0]} vs {plain.stdout}")
    print(f"ep_plan_servers_test: ok ({tokens} tokens x top-{top_k} per MoE layer over 2 ranks; plan loaded)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
