#!/usr/bin/env python3
"""Prints the Markdown table of a run.py result file (README.md's tables come from it)."""
import json
import sys

j = json.load(open(sys.argv[1]))
n = j["config"]["num_requests"]


def ms(x):
    return "-" if x is None else "%.1f" % (x * 1000)


print("| prompt | rate | setup | TTFT p50 / p99 (ms) | ITL p50 / p99 (ms) | goodput req/s (met SLO) | KV pulled per request | load avg 1m |")
print("|---|---|---|---|---|---|---|---|")
for L in sorted({p["input_len"] for p in j["points"]}):
    for r in sorted({p["rate"] for p in j["points"]}):
        for k in ("agg", "agg1t", "disagg"):
            sel = [p for p in j["points"] if p["setup"] == k and p["input_len"] == L and p["rate"] == r]
            if not sel:
                continue
            p = sel[0]
            kv = "-"
            if k == "disagg" and p.get("kv_bytes_per_request"):
                kv = "%d KiB, %.1f ms (%.0f%% of TTFT p50)" % (p["kv_bytes_per_request"] / 1024,
                                                              p["kv_seconds_per_request"] * 1000,
                                                              100 * p["kv_share_of_ttft_p50"])
            print(f"| {L} | {r:g} | {k} | {ms(p['ttft_p50_seconds'])} / {ms(p['ttft_p99_seconds'])} | "
                  f"{ms(p['itl_p50_seconds'])} / {ms(p['itl_p99_seconds'])} | "
                  f"{p['goodput_requests_per_second']:.2f} ({p['slo_met']}/{n}) | {kv} | {p['loadavg_1m_before']:.1f} |")
