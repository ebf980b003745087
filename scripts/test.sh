#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs packages, checks that every
# tracked source is clang-formatted, builds (release, CUDA backend compiled when nvcc is found),
# runs every ctest test, then the CPU tests again under ASan+UBSan, then the engine, scheduler,
# server and thread-pool tests under ThreadSanitizer, then a short smoke of each libFuzzer target
# (fuzz/). GPU tests skip visibly on machines without a GPU.
#
#   scripts/test.sh            everything
#   MOE_TEST_SKIP_ASAN=1 scripts/test.sh   skip the ASan+UBSan pass (local iteration)
#   MOE_TEST_SKIP_TSAN=1 scripts/test.sh   skip the TSan pass (local iteration)
#   MOE_TEST_SKIP_FUZZ=1 scripts/test.sh   skip the libFuzzer smoke (local iteration)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
JOBS=${MOE_JOBS:-$(nproc)}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

scripts/install_deps.sh

echo "== format check (clang-format 14)"
scripts/check_format.sh

# The Python gRPC client test needs grpcio and grpcio-tools (PyPI); without them it is skipped
# with a message at configure time.
if command -v python3 >/dev/null 2>&1; then
  python3 -m pip install -q -r examples/requirements.txt 2>/dev/null \
    || echo "test.sh: could not pip install examples/requirements.txt; the Python client test will be skipped"
  # The official OpenAI client (http.openai_client) and prometheus_client (the metrics test's
  # cross-check of our exposition); each test says so and is skipped where its package is absent.
  python3 -m pip install -q -r tests/http/requirements.txt prometheus_client 2>/dev/null \
    || echo "test.sh: could not pip install the OpenAI / Prometheus clients; their tests will be skipped"
fi

echo "== release build"
export PATH=$PATH:/usr/local/cuda/bin   # nvcc's usual place: the CUDA backend is compiled when found
cmake --preset release >/dev/null
cmake --build build/release -j"$JOBS"
if [[ -d build/release/kernels ]]; then  # the CUDA backend was configured (nvcc found)
  echo "== CUDA kernels: ptxas spill check (sm_80, sm_90)"
  cmake --build build/release --target check_ptxas_spills
fi

echo "== tests (release)"
ctest --test-dir build/release --output-on-failure -j"$JOBS" --timeout 600

if [[ "${MOE_TEST_SKIP_ASAN:-0}" != "1" ]]; then
  echo "== ASan+UBSan build (CPU only)"
  cmake --preset cpu-asan >/dev/null
  cmake --build build/asan -j"$JOBS"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build/asan --output-on-failure -j"$JOBS" --timeout 900 -LE "slow|gpu"
fi

if [[ "${MOE_TEST_SKIP_TSAN:-0}" != "1" ]]; then
  # The threaded parts: the engine thread and its inbox, the scheduler, the gRPC and HTTP servers,
  # the metrics registry (lock-free writers against a scraper), expert-parallel groups of threads
  # and the thread pool. Only their test binaries are built. Debian's gRPC and protobuf are not
  # TSan-instrumented; scripts/tsan.supp silences their own reports, by name, and nothing of ours.
  echo "== TSan build (CPU only): engine, server, http, metrics, ep and unit tests"
  tsan_start=$SECONDS
  cmake --preset cpu-tsan >/dev/null
  cmake --build build/tsan -j"$JOBS" --target moe_engine_tests moe_server_tests moe_http_tests moe_metrics_tests \
    moe_ep_tests moe_unit_tests
  echo "== tests under TSan (engine, scheduler, servers, metrics, ep groups, thread pool)"
  # A report fails its test (TSan exits 66). Every test of those binaries (labels engine, server,
  # http, metrics, ep), the unit binary's ThreadPool.
  # ignore_noninstrumented_modules: interceptors (malloc, memcpy, send, ...) called from the
  # uninstrumented libraries are not checked; see scripts/tsan.supp.
  export TSAN_OPTIONS="ignore_noninstrumented_modules=1:second_deadlock_stack=1:history_size=7:suppressions=$ROOT/scripts/tsan.supp"
  # Not here: the tests that drive the moeserve binary or mpirun (not built under TSan) and the
  # 500-stream HTTP load test (its own binary; minutes under TSan, it adds no new thread pattern).
  ctest --test-dir build/tsan --output-on-failure -j"$JOBS" --timeout 900 -L '^(engine|server|http|metrics|ep)$' \
    -E 'python_client|openai_client|^ep\.mpi_|^ep\.run_|HttpLoad|_NOT_BUILT'
  ctest --test-dir build/tsan --output-on-failure -j"$JOBS" --timeout 900 -R '^ThreadPool\.'
  unset TSAN_OPTIONS
  echo "== TSan pass: $((SECONDS - tsan_start)) s"
fi

if [[ "${MOE_TEST_SKIP_FUZZ:-0}" != "1" ]]; then
  # Every file loader and the request builder under libFuzzer (clang, ASan+UBSan), from the seed
  # corpora in fuzz/corpus: a short run each; longer runs: scripts/fuzz.sh TARGET SECONDS.
  echo "== libFuzzer smoke"
  scripts/fuzz_smoke.sh
fi
