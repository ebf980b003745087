#!/usr/bin/env python3
"""Parses a Prometheus text exposition with the official Python client's parser and prints every
sample as one JSON line [name, {labels}, value], so the C++ test can compare it with what it
rendered. Exit 77 when prometheus_client is not installed (the test then skips, visibly).

    python3 check_exposition.py FILE
"""
import json
import math
import sys

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    print("prometheus_client is not installed (pip install prometheus_client)", file=sys.stderr)
    sys.exit(77)


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        text = f.read()
    seen = set()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            if key in seen:
                print(f"duplicate series {key}", file=sys.stderr)
                return 1
            seen.add(key)
            value = s.value
            # JSON has no infinities or NaN: spell them as the exposition does.
            if math.isnan(value):
                value = "NaN"
            elif math.isinf(value):
                value = "+Inf" if value > 0 else "-Inf"
            print(json.dumps([s.name, s.labels, value], sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
