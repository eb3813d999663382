#!/usr/bin/env bash
# The whole test suite: setup, formatting and lint, unit tests, and the end-to-end suites that run real
# nginx and real backend processes on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy" >&2
cargo clippy --all-targets --quiet -- -D warnings
echo "== control plane for the controller tests (kube-apiserver + etcd from Go modules; first build ~5 min, then cached)" >&2
e2e/cluster/build.sh >/dev/null
echo "== helm for the chart tests (built from its Go module; first build ~2-3 min, then cached)" >&2
e2e/helm/build.sh >/dev/null
# The e2e test binary starts its own control plane (e2e/cluster/up, ~3 s) and stops it when it exits.
echo "== cargo test (unit + e2e)" >&2
cargo test --all-targets -- --test-threads "${TEST_THREADS:-2}"
