#!/usr/bin/env bash
# Installs what alb-rs needs on a Debian/Ubuntu machine: nginx with the Lua module and the Lua libraries the
# data plane uses, plus wrk for the benchmarks. Idempotent: does nothing when everything is there.
set -euo pipefail

pkgs=(nginx iproute2 libnginx-mod-http-lua libnginx-mod-stream lua-resty-core lua-resty-lrucache lua-cjson wrk openssl curl python3-venv)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The Debian package starts a system nginx on port 80; alb-rs runs its own nginx, so stop that one.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet nginx 2>/dev/null; then
    $sudo systemctl stop nginx || true
    $sudo systemctl disable nginx >/dev/null 2>&1 || true
  fi
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found: install Rust (https://rustup.rs) first" >&2
  exit 1
fi
if ! command -v go >/dev/null 2>&1; then
  echo "setup: go not found: the controller tests build kube-apiserver and etcd from Go modules (Go >= 1.24)" >&2
  exit 1
fi
# The gRPC end-to-end tests (e2e/grpc.rs) run a real gRPC server and client: Python grpcio in the repo's .venv.
repo="$(cd "$(dirname "$0")/.." && pwd)"
if ! "$repo/.venv/bin/python" -c "import grpc" >/dev/null 2>&1; then
  echo "setup: installing grpcio into $repo/.venv (gRPC tests)" >&2
  python3 -m venv "$repo/.venv"
  "$repo/.venv/bin/pip" install -q grpcio >/dev/null
fi
echo "setup: ok ($(nginx -v 2>&1), $(cargo --version))" >&2
