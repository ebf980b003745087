#!/usr/bin/env python3
"""`mpirun -np N moeserve run --expert-parallel` against plain `moeserve run`.

For each N given, the same prompts must give the same greedy ids, the same logprobs (printed
from the same float bits, so string-equal JSON numbers) and the same finish reasons as the run
without MPI. Prompts are spread i % N over the ranks, so with more ranks than prompts some rank
has none. Every process runs with one thread and a timeout; nothing here can hang.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

KEYS = ("ids", "logprobs", "finish_reason", "prompt_tokens")


def run(cmd, env, timeout):
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        sys.exit(f"FAILED (rc {p.returncode}): {' '.join(cmd)}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    rows = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    return [{k: r[k] for k in KEYS} for r in rows]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moeserve", required=True)
    ap.add_argument("--mpiexec", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--np", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--placement", help="placement JSON (written to a file, passed as --ep-placement)")
    ap.add_argument("--placement-np", type=int, help="the world size the placement is for")
    ap.add_argument("extra", nargs="*", help="more moeserve run flags (after --)")
    a = ap.parse_args()

    env = dict(os.environ, OMP_NUM_THREADS="1", OMPI_MCA_btl_vader_single_copy_mechanism="none",
               MOESERVE_LOG_LEVEL="warn")
    prompts = ["1,2,3", "5,6,7,8,9,10,11", "12", "40,41,42,43"]
    base = [a.moeserve, "run", "--model", a.model, "--max-tokens", "6", "--threads", "1", "--json",
            "--ignore-eos"] + a.extra
    for p in prompts:
        base += ["--prompt-ids", p]
    plain = run(base, env, 120)
    if len(plain) != len(prompts):
        sys.exit(f"plain run printed {len(plain)} results for {len(prompts)} prompts")
    mpirun = [a.mpiexec, "--allow-run-as-root", "--oversubscribe", "--bind-to", "none"]
    with tempfile.TemporaryDirectory() as tmp:
        extra_ep = []
        if a.placement:
            path = os.path.join(tmp, "placement.json")
            with open(path, "w") as f:
                f.write(a.placement)
            extra_ep = ["--ep-placement", path]
        for n in ([a.placement_np] if a.placement else a.np):
            got = run(mpirun + ["-np", str(n)] + base + ["--expert-parallel", "--comm-timeout", "60"] + extra_ep,
                      env, 180)
            if got != plain:
                for i, (x, y) in enumerate(zip(plain, got)):
                    if x != y:
                        print(f"prompt {i}: plain {x}\n          np={n}  {y}")
                sys.exit(f"FAILED: np={n} differs from the plain run ({len(got)} vs {len(plain)} results)")
            print(f"np={n}: {len(got)} prompts, ids and logprobs identical to the plain run")


if __name__ == "__main__":
    main()
