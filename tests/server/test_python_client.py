#!/usr/bin/env python3
"""`moeserve serve --port 0` as a subprocess on the demo model, driven by examples/python_client.py.

Checks: the listening line, a token-id stream with exact length, a text stream, a bad request
(INVALID_ARGUMENT, non-zero exit), the port set through MOESERVE_PORT, and SIGTERM -> exit 0.
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading


def start_server(moeserve, env_port=False):
    env = dict(os.environ, OMP_NUM_THREADS="2", MOESERVE_THREADS="2", MOESERVE_KV_CACHE_BYTES=str(64 << 20))
    cmd = [moeserve, "serve", "--drain-grace-seconds", "10"]
    if env_port:
        env["MOESERVE_PORT"] = "0"
    else:
        cmd += ["--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    found = {}

    def read_stdout():
        for line in proc.stdout:
            m = re.match(r"moeserve listening on (\S+)", line)
            if m:
                found["addr"] = m.group(1)
                ready.set()

    ready = threading.Event()
    threading.Thread(target=read_stdout, daemon=True).start()
    if not ready.wait(120):
        proc.kill()
        raise AssertionError("no 'moeserve listening on' line; stderr:\n" + proc.stderr.read())
    return proc, found["addr"]


def run_client(client, addr, *args):
    r = subprocess.run([sys.executable, client, "--server", addr, *args], capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout, r.stderr


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--moeserve", required=True)
    p.add_argument("--source-dir", required=True)
    a = p.parse_args()
    client = os.path.join(a.source_dir, "examples", "python_client.py")
    failures = []

    def check(cond, what):
        print(("ok   " if cond else "FAIL ") + what, flush=True)
        if not cond:
            failures.append(what)

    proc, addr = start_server(a.moeserve)
    try:
        check(re.match(r"127\.0\.0\.1:[1-9][0-9]*$", addr) is not None, f"listening on a picked port ({addr})")
        rc, out, err = run_client(client, addr, "--prompt-ids", "1,2,3", "--max-tokens", "7", "--temperature", "0",
                                  "--ignore-eos", "--json")
        check(rc == 0, f"token-id stream exits 0 (rc {rc}, stderr {err.strip()[-300:]})")
        events = [json.loads(line) for line in out.splitlines() if line.strip()]
        ids = [i for e in events if "delta" in e for i in e["delta"]["token_ids"]]
        finals = [e["final"] for e in events if "final" in e]
        check(len(ids) == 7, f"7 tokens streamed (got {len(ids)})")
        check(len(finals) == 1 and finals[0]["finish_reason"] == "FINISH_REASON_LENGTH"
              and finals[0]["completion_tokens"] == 7, f"one final, LENGTH, 7 completion tokens ({finals})")

        rc2, out2, _ = run_client(client, addr, "--prompt-ids", "1,2,3", "--max-tokens", "7", "--temperature", "0",
                                  "--ignore-eos", "--json")
        ids2 = [i for line in out2.splitlines() if line.strip() for i in json.loads(line).get("delta", {}).get("token_ids", [])]
        check(rc2 == 0 and ids2 == ids, "greedy is repeatable through the client")

        rc, out, err = run_client(client, addr, "--prompt", "Hello, moeserve", "--max-tokens", "5", "--ignore-eos")
        check(rc == 0 and "finish: FINISH_REASON_LENGTH" in err, f"text stream ends with LENGTH (rc {rc}, {err.strip()[-300:]})")

        rc, out, err = run_client(client, addr, "--prompt-ids", "1,2", "--top-p", "1.5")
        check(rc != 0 and "INVALID_ARGUMENT" in err and "sampling.top_p" in err,
              f"top_p 1.5 -> INVALID_ARGUMENT naming sampling.top_p ({err.strip()[-300:]})")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = "timeout"
    check(rc == 0, f"SIGTERM -> exit 0 (got {rc})")

    proc, addr = start_server(a.moeserve, env_port=True)
    proc.send_signal(signal.SIGINT)
    rc = proc.wait(60)
    check(re.match(r"127\.0\.0\.1:[1-9][0-9]*$", addr) is not None and rc == 0,
          f"MOESERVE_PORT=0 picks a port ({addr}); SIGINT -> exit 0 (got {rc})")

    print(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
