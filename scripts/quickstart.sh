#!/usr/bin/env bash
# Quick start: installs what is missing, builds alb, starts two demo backends and serves
# examples/quickstart on http://127.0.0.1:8080 until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release --quiet
alb=target/release/alb
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
$alb echo-server --listen 127.0.0.1:18081 --name demo-v1 & pids+=($!)
$alb echo-server --listen 127.0.0.1:18082 --name demo-v2 & pids+=($!)
cat >&2 <<'TEXT'

  alb-rs quick start: http://127.0.0.1:8080  (Ctrl-C stops everything)
    curl -s http://127.0.0.1:8080/                          # default backend: demo-v1
    curl -s -H 'x-canary: yes' http://127.0.0.1:8080/        # header rule: demo-v2
    curl -s http://127.0.0.1:8080/api/anything              # prefix rule, weighted 50/50 v1/v2
    curl -s -H 'Host: v2.example.com' http://127.0.0.1:8080/ # host rule: demo-v2
    curl -s -H 'Host: other.test' http://127.0.0.1:8080/only-this # HOST AND URL rule
  Edit examples/quickstart/*.yaml while it runs: changes apply in milliseconds, no nginx reload.

TEXT
$alb standalone --manifests examples/quickstart --runtime-dir "${ALB_RUNTIME_DIR:-$PWD/.runtime/quickstart}" --api-port 19370 "$@" &
pids+=($!)
wait "${pids[-1]}"
