#!/usr/bin/env bash
# CI smoke for the libFuzzer targets: each runs for MOE_FUZZ_SMOKE_SECONDS (default 15) from
# its seed corpus; any crash, leak, sanitizer report, timeout or out-of-memory fails the step.
# MOE_TEST_SKIP_FUZZ=1 skips it (machines without clang's fuzzer runtime, quick local runs).
set -euo pipefail
if [[ ${MOE_TEST_SKIP_FUZZ:-0} == 1 ]]; then
  echo "fuzz_smoke: skipped (MOE_TEST_SKIP_FUZZ=1)"
  exit 0
fi
root=$(cd "$(dirname "$0")/.." && pwd)
exec "$root/scripts/fuzz.sh" all "${MOE_FUZZ_SMOKE_SECONDS:-15}"
