#!/usr/bin/env bash
# Container smoke test of the CPU image, with podman and buildah (no Docker daemon needed):
#   1. builds docker/Dockerfile.cpu (a full compile inside the image: ~10-30 min on 2 cores),
#   2. starts `moeserve serve` inside it on 127.0.0.1 with the built-in demo model,
#   3. checks gRPC health (liveness and readiness), a Generate with the image's own
#      `moeserve generate` client, the Prometheus /metrics and an OpenAI chat completion when the
#      image's server has --http-port (skipped, and said so, when it has not),
#   4. prints the image size (fails above MOE_SMOKE_MAX_MB, default 300), and removes the image.
#
#   scripts/container_smoke.sh
#
# Environment: MOE_SMOKE_IMAGE (tag, default moeserve-cpu-smoke), MOE_SMOKE_PORT (50071),
# MOE_SMOKE_HTTP_PORT (50072), MOE_SMOKE_JOBS (compile jobs, 2), MOE_SMOKE_SKIP_BUILD=1 (test an
# image already built under MOE_SMOKE_IMAGE), MOE_SMOKE_KEEP_IMAGE=1 (do not remove it),
# MOE_SMOKE_MAX_MB (300).
#
# `podman run` does not work in every sandbox (it may fail to set rlimits), so the server runs
# with `buildah run`, which shares the host's network namespace: the checks reach it on
# 127.0.0.1. Without a registry, `FROM debian:bookworm-slim` is satisfied by a base image made
# here from Debian's packages with mmdebstrap (with the dpkg path excludes of Debian's slim image).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${MOE_SMOKE_IMAGE:-moeserve-cpu-smoke}
PORT=${MOE_SMOKE_PORT:-50071}
HTTP_PORT=${MOE_SMOKE_HTTP_PORT:-50072}
JOBS=${MOE_SMOKE_JOBS:-2}
MAX_MB=${MOE_SMOKE_MAX_MB:-300}
ST=(--storage-driver vfs)
BASE=docker.io/library/debian:bookworm-slim

log() { printf '[container_smoke %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() {
  log "FAIL: $*"
  exit 1
}
for tool in podman buildah; do command -v "$tool" >/dev/null || die "$tool not found (apt-get install podman buildah)"; done

work=$(mktemp -d /tmp/moe_smoke.XXXXXX)
ctr=""
server_pid=""
# buildah run does not forward signals: SIGTERM goes to the moeserve process itself, the last
# of the chain buildah -> buildah-chroot-runtime -> buildah-chroot-exec -> moeserve.
server_leaf() {
  local p=$server_pid c
  while c=$(ps -o pid= --ppid "$p" | head -1 | tr -d ' ') && [[ -n "$c" ]]; do p=$c; done
  echo "$p"
}
stop_server() {  # SIGTERM (the server drains and exits), then SIGKILL after 30 s
  [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null || return 0
  local leaf
  leaf=$(server_leaf)
  kill -TERM "$leaf" 2>/dev/null || true
  for _ in $(seq 150); do kill -0 "$server_pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -KILL "$leaf" 2>/dev/null || true
  kill -KILL "$server_pid" 2>/dev/null || true
  return 1
}
cleanup() {
  stop_server || true
  [[ -n "$ctr" ]] && buildah "${ST[@]}" rm "$ctr" >/dev/null 2>&1 || true
  if [[ "${MOE_SMOKE_KEEP_IMAGE:-0}" != 1 ]]; then
    podman "${ST[@]}" rmi -f "$IMAGE" >/dev/null 2>&1 && log "removed image $IMAGE" || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# ---- 1. base image and build -------------------------------------------------------------------
if [[ "${MOE_SMOKE_SKIP_BUILD:-0}" != 1 ]]; then
  if ! podman "${ST[@]}" image exists "$BASE"; then
    command -v mmdebstrap >/dev/null || die "no $BASE image and no mmdebstrap to make one (apt-get install mmdebstrap uidmap)"
    log "making $BASE from Debian's packages (mmdebstrap)"
    mmdebstrap --variant=minbase \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/groff/*' \
      --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
      --dpkgopt='path-include=/usr/share/locale/locale.alias' --dpkgopt='path-exclude=/usr/share/lintian/*' \
      bookworm "$work/rootfs.tar" >"$work/mmdebstrap.log" 2>&1 || { tail -20 "$work/mmdebstrap.log"; die "mmdebstrap"; }
    podman "${ST[@]}" import "$work/rootfs.tar" "$BASE" >/dev/null
    rm -f "$work/rootfs.tar"
  fi
  log "building $IMAGE from docker/Dockerfile.cpu (-j$JOBS)"
  t0=$(date +%s)
  podman "${ST[@]}" build --isolation chroot --pull=never --build-arg MOESERVE_BUILD_JOBS="$JOBS" \
    -t "$IMAGE" -f docker/Dockerfile.cpu . >"$work/build.log" 2>&1 || { tail -40 "$work/build.log"; die "image build"; }
  log "built in $(($(date +%s) - t0)) s"
fi
podman "${ST[@]}" image exists "$IMAGE" || die "no image $IMAGE"

# ---- 2. the server inside ----------------------------------------------------------------------
ctr=$(buildah "${ST[@]}" from --pull-never "$IMAGE")
inside() { buildah "${ST[@]}" run --isolation chroot "$ctr" -- "$@"; }
http_args=()
serve_help=$(inside moeserve serve --help 2>/dev/null || true)
if grep -q -- '--http-port' <<<"$serve_help"; then
  http_args=(--http-port "$HTTP_PORT")
  # The demo model has no chat template of its own: give it a small one (copied into the
  # container) so /v1/chat/completions has a prompt to render.
  if grep -q -- '--chat-template' <<<"$serve_help"; then
    printf '%s' "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}
{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}" >"$work/chat.jinja"
    buildah "${ST[@]}" copy "$ctr" "$work/chat.jinja" /tmp/chat.jinja >/dev/null
    http_args+=(--chat-template /tmp/chat.jinja)
  fi
fi
log "starting moeserve serve on 127.0.0.1:$PORT ${http_args[*]:-(no --http-port in this image)}"
inside moeserve serve --host 127.0.0.1 --port "$PORT" --threads 1 --kv-cache-bytes 67108864 --drain-grace-seconds 5 "${http_args[@]}" \
  >"$work/server.log" 2>&1 &
server_pid=$!

# ---- 3. checks ---------------------------------------------------------------------------------
# grpc.health.v1.Health/Check over the wire with grpcio when the host has it (what a Kubernetes
# gRPC probe sends), else readiness is inferred from a Generate that succeeds.
health() {  # $1: service name ("" = liveness); prints SERVING / NOT_SERVING / an error
  python3 - "$PORT" "$1" <<'EOF'
import sys
import grpc
port, service = sys.argv[1], sys.argv[2].encode()
req = b"\x0a" + bytes([len(service)]) + service if service else b""
ch = grpc.insecure_channel(f"127.0.0.1:{port}")
check = ch.unary_unary("/grpc.health.v1.Health/Check")
try:
    resp = check(req, timeout=5)
except grpc.RpcError as e:
    print(e.code().name)
    sys.exit(0)
print({b"\x08\x01": "SERVING", b"\x08\x02": "NOT_SERVING"}.get(resp, "UNKNOWN"))
EOF
}
have_py_grpc=0
python3 -c "import grpc" 2>/dev/null && have_py_grpc=1
deadline=$(($(date +%s) + 180))
ready=0
while (($(date +%s) < deadline)); do
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log"; die "the server exited"; }
  if ((have_py_grpc)); then
    [[ "$(health moe.v1.Inference)" == SERVING ]] && ready=1 && break
  else
    inside moeserve generate --server "127.0.0.1:$PORT" --prompt-ids 1,2,3 --max-tokens 1 >/dev/null 2>&1 && ready=1 && break
  fi
  sleep 1
done
((ready)) || { cat "$work/server.log"; die "the server did not become ready in 180 s"; }
if ((have_py_grpc)); then
  [[ "$(health '')" == SERVING ]] || die "liveness is not SERVING"
  log "PASS health: liveness and readiness (moe.v1.Inference) SERVING"
else
  log "PASS health: readiness inferred from a Generate (python3 grpcio not installed on the host)"
fi

out=$(inside moeserve generate --server "127.0.0.1:$PORT" --prompt "Hello" --max-tokens 8 --temperature 0 --ignore-eos --json) ||
  die "moeserve generate failed: $out"
echo "$out" | grep -q '"final"' || die "no final event in the generate output: $out"
echo "$out" | grep -Eq '"completion_tokens": ?8' || die "generate did not produce 8 tokens: $out"
log "PASS gRPC Generate (the image's moeserve generate): 8 tokens and a final event"

# The Prometheus metrics over gRPC (Control.GetMetrics) with the image's own client: the engine
# counted the generation above and the server counted the call.
prom=$(inside moeserve metrics --server "127.0.0.1:$PORT") || die "moeserve metrics failed: $prom"
grep -Eq '^vllm:generation_tokens_total\{model_name="demo"\} ([89]|[1-9][0-9]+)(\.0)?$' <<<"$prom" ||
  die "vllm:generation_tokens_total does not count the 8 generated tokens: $(grep generation_tokens <<<"$prom")"
grep -q '^grpc_server_handled_total{grpc_type="server_stream",grpc_service="moe.v1.Inference",grpc_method="Generate",grpc_code="OK"}' <<<"$prom" ||
  die "grpc_server_handled_total has no OK Generate"
if python3 -c "import prometheus_client" 2>/dev/null; then
  python3 -c 'import sys; from prometheus_client.parser import text_string_to_metric_families as p; n=sum(1 for _ in p(sys.stdin.read())); assert n > 10, n' <<<"$prom" ||
    die "prometheus_client could not parse the metrics"
  log "PASS metrics over gRPC (moeserve metrics): engine and call counters, parsed by prometheus_client"
else
  log "PASS metrics over gRPC (moeserve metrics): engine and call counters (prometheus_client not installed: not parsed)"
fi

if ((${#http_args[@]})); then
  command -v curl >/dev/null || die "curl not found on the host (apt-get install curl)"
  base="http://127.0.0.1:$HTTP_PORT"
  curl -fsS "$base/health" >/dev/null || die "GET /health"
  chat=$(curl -sS "$base/v1/chat/completions" -H 'Content-Type: application/json' \
    -d '{"model":"demo","messages":[{"role":"user","content":"Hello"}],"max_tokens":8,"temperature":0}') ||
    die "POST /v1/chat/completions: no answer"
  echo "$chat" | python3 -c 'import json,sys; r=json.load(sys.stdin); assert r["object"]=="chat.completion", r; assert r["choices"][0]["message"]["role"]=="assistant", r; assert r["usage"]["completion_tokens"]>0, r' ||
    die "unexpected chat completion: $chat"
  log "PASS OpenAI chat completion over HTTP"
  metrics=$(curl -fsS "$base/metrics") || die "GET /metrics"
  for name in vllm:num_requests_running vllm:generation_tokens_total vllm:time_to_first_token_seconds_bucket grpc_server_handled_total; do
    grep -q "^$name" <<<"$metrics" || die "/metrics lacks $name"
  done
  log "PASS /metrics has the engine's and the gRPC server's metrics"
else
  log "SKIPPED OpenAI chat completion and /metrics: this image's moeserve serve has no --http-port"
fi

# ---- 4. size -----------------------------------------------------------------------------------
bytes=$(podman "${ST[@]}" image inspect "$IMAGE" --format '{{.Size}}')
mb=$((bytes / 1000000))
log "image $IMAGE: $mb MB ($bytes bytes; limit $MAX_MB MB)"
((mb <= MAX_MB)) || die "the image is larger than $MAX_MB MB"

t0=$(date +%s)
stop_server || die "the server did not exit within 30 s of SIGTERM"
grep -q "exiting" "$work/server.log" || { tail -20 "$work/server.log"; die "no clean exit in the server log after SIGTERM"; }
log "PASS the server drained and exited on SIGTERM in $(($(date +%s) - t0)) s"
log "OK"
