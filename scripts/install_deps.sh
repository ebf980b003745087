#!/usr/bin/env bash
# Installs the Debian 12 packages moeserve builds and tests with. Idempotent; needs root (or sudo).
# Used by the README commands, by .ci/run and by docker/Dockerfile.*.
#   MOE_DEPS_SKIP="pkg ..."  leaves those packages out (the images skip the test and lint tools).
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git clang-format
  libspdlog-dev libfmt-dev nlohmann-json3-dev libcli11-dev
  libdnnl-dev ocl-icd-opencl-dev libopenblas-dev
  libpcre2-dev libutf8proc-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc grpc-proto
  openmpi-bin libopenmpi-dev  # MpiComm (expert parallelism across processes) and its mpirun tests
  libucx-dev  # the UCX KV transport of disaggregated serving (src/disagg)
  libboost-dev  # Boost.Beast + Asio (header-only): the OpenAI-compatible HTTP API (src/http)
  clang libclang-rt-14-dev  # libFuzzer + sanitizer runtimes for fuzz/ (scripts/fuzz.sh)
)

read -r -a skip <<<"${MOE_DEPS_SKIP:-}"
missing=()
for p in "${PACKAGES[@]}"; do
  [[ " ${skip[*]} " == *" $p "* ]] && continue
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install_deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
echo "install_deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
