#!/usr/bin/env python3
"""`mpirun -np 2 moeserve serve --expert-parallel`: data-parallel front ends over one expert group.

Checks: rank r listens on --port + r; a greedy request to each rank's front end gives the ids of
plain `moeserve run` for that prompt (both ranks busy at once, and one idle while the other
works); then rank 1 is killed mid-request (mpirun --enable-recovery keeps rank 0 alive): the
client of rank 0 gets UNAVAILABLE within the --comm-timeout, not a hang, and rank 0 reports its
engine failed. Every process has a timeout.
"""
import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time


def free_port_pair():
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p < 65000:
            try:
                with socket.socket() as s2:
                    s2.bind(("127.0.0.1", p + 1))
                return p
            except OSError:
                pass
    raise RuntimeError("no free port pair")


def generate(moeserve, addr, ids, max_tokens, timeout=120):
    r = subprocess.run([moeserve, "generate", "--server", addr, "--prompt-ids", ids, "--max-tokens", str(max_tokens),
                        "--temperature", "0", "--ignore-eos", "--json"], capture_output=True, text=True,
                       timeout=timeout)
    events = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    toks = [i for e in events if "delta" in e for i in e["delta"]["token_ids"]]
    return r.returncode, toks, events, r.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moeserve", required=True)
    ap.add_argument("--mpiexec", required=True)
    ap.add_argument("--model", required=True)
    a = ap.parse_args()
    failures = []

    def check(cond, what):
        print(("ok   " if cond else "FAIL ") + what, flush=True)
        if not cond:
            failures.append(what)

    env = dict(os.environ, OMP_NUM_THREADS="1", OMPI_MCA_btl_vader_single_copy_mechanism="none",
               MOESERVE_KV_CACHE_BYTES=str(16 << 20))
    prompts = {"1,2,3": 8, "9,8,7,6,5": 8}
    plain = {}
    for ids, n in prompts.items():
        r = subprocess.run([a.moeserve, "run", "--model", a.model, "--prompt-ids", ids, "--max-tokens", str(n),
                            "--threads", "1", "--ignore-eos", "--json", "--log-level", "warn"],
                           capture_output=True, text=True, timeout=120, env=env)
        plain[ids] = json.loads(r.stdout.splitlines()[0])["ids"]

    port = free_port_pair()
    cmd = [a.mpiexec, "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "--enable-recovery", "-np", "2",
           a.moeserve, "serve", "--expert-parallel", "--comm-timeout", "3", "--model", a.model, "--port", str(port),
           "--threads", "1", "--drain-grace-seconds", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    addrs = set()
    ready = threading.Event()
    err_lines = []

    def read_stdout():
        for line in proc.stdout:
            m = re.match(r"moeserve listening on (\S+)", line)
            if m:
                addrs.add(m.group(1))
                if len(addrs) == 2:
                    ready.set()

    def read_stderr():
        for line in proc.stderr:
            err_lines.append(line)

    threading.Thread(target=read_stdout, daemon=True).start()
    threading.Thread(target=read_stderr, daemon=True).start()
    try:
        if not ready.wait(180):
            raise AssertionError("the two ranks did not both listen; stderr:\n" + "".join(err_lines[-40:]))
        want = {f"127.0.0.1:{port}", f"127.0.0.1:{port + 1}"}
        check(addrs == want, f"rank r listens on --port + r ({sorted(addrs)})")
        r0, r1 = f"127.0.0.1:{port}", f"127.0.0.1:{port + 1}"
        # One rank busy, the other idle (it still steps and serves its experts).
        for ids in prompts:
            rc, toks, _, err = generate(a.moeserve, r0, ids, prompts[ids])
            check(rc == 0 and toks == plain[ids], f"rank 0 alone: {ids} -> {toks} (plain run: {plain[ids]}; {err[-200:]})")
        rc, toks, _, err = generate(a.moeserve, r1, "9,8,7,6,5", 8)
        check(rc == 0 and toks == plain["9,8,7,6,5"], f"rank 1 alone -> {toks}")
        # Both at once.
        out = {}

        def go(addr, ids):
            out[addr] = generate(a.moeserve, addr, ids, prompts[ids])

        ts = [threading.Thread(target=go, args=(r0, "1,2,3")), threading.Thread(target=go, args=(r1, "9,8,7,6,5"))]
        for t in ts:
            t.start()
        for t in ts:
            t.join(180)
        check(out.get(r0, (1, None))[1] == plain["1,2,3"] and out.get(r1, (1, None))[1] == plain["9,8,7,6,5"],
              "both ranks at once give the plain run's ids")

        # GetServerInfo / GetLoad through the Python stubs (examples/python_client.py), when grpcio is here.
        try:
            import grpc
            sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples"))
            from python_client import load_stubs
            _, _, cpb, cgrpc = load_stubs()
        except ImportError as e:
            print(f"skip GetServerInfo/GetLoad checks: {e}")
            cpb = None
        if cpb is not None:
            for rank, addr in ((0, r0), (1, r1)):
                with grpc.insecure_channel(addr) as ch:
                    stub = cgrpc.ControlStub(ch)
                    info = stub.GetServerInfo(cpb.GetServerInfoRequest(), timeout=30).expert_parallel
                    layers = {l.layer: list(l.experts) for l in info.layers}
                    want_experts = [0, 1, 2, 3] if rank == 0 else [4, 5, 6, 7]
                    check(info.rank == rank and info.world_size == 2 and info.comm == "mpi"
                          and layers == {0: want_experts, 2: want_experts},
                          f"GetServerInfo of rank {rank}: rank {info.rank} of {info.world_size} ({info.comm}), {layers}")
                    load = stub.GetLoad(cpb.GetLoadRequest(), timeout=30)
                    per_layer = {e.layer: list(e.tokens) for e in load.expert_load}
                    ok = set(per_layer) == {0, 2} and all(len(v) == 8 for v in per_layer.values())
                    # Every token of this rank's requests went to top-2 experts in each MoE layer.
                    ok = ok and sum(per_layer.get(0, [])) == sum(per_layer.get(2, [])) > 0
                    check(ok, f"GetLoad of rank {rank}: per-layer per-expert counts {per_layer}")

        # Rank 1 dies mid-request: rank 0's client must get UNAVAILABLE within the timeout.
        pids = subprocess.run(["pgrep", "-f", "-s", str(os.getpgid(proc.pid)), "moeserve serve"],
                              capture_output=True, text=True).stdout.split()
        rank_pids = {}
        for pid in pids:
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    e = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
                if b"OMPI_COMM_WORLD_RANK" in e:
                    rank_pids[int(e[b"OMPI_COMM_WORLD_RANK"])] = int(pid)
            except OSError:
                pass
        check(set(rank_pids) == {0, 1}, f"found both ranks' processes ({rank_pids})")
        if 1 in rank_pids:
            # Requests of 250 tokens back to back on rank 0 until one fails: the kill lands in one.
            res = {}
            killed = {}

            def client():
                for _ in range(200):
                    r = generate(a.moeserve, r0, "1,2,3", 250, 60)
                    if r[0] != 0:
                        res["r"] = r
                        return

            t = threading.Thread(target=client)
            t.start()
            time.sleep(1.0)
            os.kill(rank_pids[1], signal.SIGKILL)
            t0 = time.time()
            t.join(60)
            took = time.time() - t0
            check("r" in res, f"the client of rank 0 returned ({took:.1f} s)")
            if "r" in res:
                rc, toks, events, err = res["r"]
                text = json.dumps(events) + err
                check(rc != 0 and "UNAVAILABLE" in text,
                      f"the client of rank 0 got UNAVAILABLE (rc {rc}, {text[-400:]})")
            check(took < 20, f"within the 3 s comm timeout plus slack ({took:.1f} s after the kill)")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    if failures:
        print("stderr of mpirun (last lines):\n" + "".join(err_lines[-30:]))
        sys.exit(f"{len(failures)} check(s) failed")


if __name__ == "__main__":
    main()
