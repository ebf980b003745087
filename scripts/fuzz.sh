#!/usr/bin/env bash
# Runs one libFuzzer target (or all, one after the other) for a given time.
#
#   scripts/fuzz.sh TARGET|all SECONDS [extra libFuzzer flags...]
#
# Targets (fuzz/*.cc): fuzz_safetensors fuzz_weights_index fuzz_config fuzz_tokenizer_json
# fuzz_tokenizer_files fuzz_tiktoken fuzz_request_builder fuzz_chat_template. Builds the `fuzz` preset first (clang, ASan+UBSan,
# only the parsers). Seeds come from fuzz/corpus/<target>/ (read only); inputs the fuzzer finds
# go to build/fuzz/corpus/<target>/, crashes to build/fuzz/artifacts/<target>/. One process,
# one job. Exit code: 0 when no target crashed, 1 otherwise. The last lines of each run give the
# number of executions (stat::number_of_executed_units).
set -euo pipefail

usage() {
  echo "usage: $0 TARGET|all SECONDS [libFuzzer flags...]" >&2
  exit 2
}
[[ $# -ge 2 ]] || usage
target=$1
seconds=$2
shift 2
[[ $seconds =~ ^[0-9]+$ ]] || usage

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
all_targets=(fuzz_safetensors fuzz_weights_index fuzz_config fuzz_tokenizer_json fuzz_tokenizer_files fuzz_tiktoken
  fuzz_request_builder fuzz_chat_template)
if [[ $target == all ]]; then
  targets=("${all_targets[@]}")
else
  [[ " ${all_targets[*]} " == *" $target "* ]] || { echo "fuzz.sh: unknown target $target" >&2; usage; }
  targets=("$target")
fi

if [[ ! -f build/fuzz/CMakeCache.txt ]]; then cmake --preset fuzz >/dev/null; fi
cmake --build --preset fuzz -j"${MOE_FUZZ_BUILD_JOBS:-2}" >/dev/null

status=0
for t in "${targets[@]}"; do
  work=build/fuzz/corpus/$t
  artifacts=build/fuzz/artifacts/$t/
  mkdir -p "$work" "$artifacts"
  log=build/fuzz/$t.log
  echo "fuzz.sh: $t for ${seconds}s (log $log)"
  # -rss_limit_mb: a parser that allocates by what the input claims shows up as a crash.
  # -timeout: a single input taking longer than 10 s is a hang.
  if ./build/fuzz/fuzz/"$t" "$work" "fuzz/corpus/$t" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
       -max_len=65536 -print_final_stats=1 -artifact_prefix="$artifacts" "$@" >"$log" 2>&1; then
    grep -E "^stat::number_of_executed_units|^Done" "$log" | sed "s/^/  $t: /"
  else
    status=1
    echo "fuzz.sh: $t FAILED; last lines of $log:" >&2
    tail -40 "$log" >&2
  fi
done
exit $status
