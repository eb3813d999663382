#!/usr/bin/env bash
# Build helm from the Go module pinned in e2e/helm/build/go.mod, into a cache
# outside the repository (same layout and rules as e2e/cluster/build.sh):
#
#   ${ALB_E2E_CACHE:-$HOME/.cache/alb-rs-e2e}/helm-<version>/bin/helm
#
# Does nothing when that binary exists and was built from the current
# go.mod/go.sum. Prints the bin path as the last line of stdout; progress goes
# to stderr.
#
# Env:
#   ALB_E2E_CACHE    cache root (default: $HOME/.cache/alb-rs-e2e)
#   ALB_E2E_REBUILD  1 = rebuild even if the cached binary is current
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mod_dir=$here/build

log() { printf 'helm/build: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v go >/dev/null || die "go is not in PATH (Go >= 1.24 is needed to build helm)"
command -v flock >/dev/null || die "flock is not in PATH (util-linux)"

# The version comes from go.mod, the single place where it is pinned.
helm_version=$(awk '$1 == "require" && $2 == "helm.sh/helm/v3" { print $3; exit } $1 == "helm.sh/helm/v3" && $2 ~ /^v/ { print $2; exit }' "$mod_dir/go.mod")
[[ -n $helm_version ]] || die "cannot read the helm.sh/helm/v3 version from $mod_dir/go.mod"

cache_root=${ALB_E2E_CACHE:-$HOME/.cache/alb-rs-e2e}
out=$cache_root/helm-$helm_version
bin=$out/bin

recipe=1
stamp="recipe=$recipe helm=$helm_version go.mod=$(sha256sum <"$mod_dir/go.mod" | cut -c1-16) go.sum=$(sha256sum <"$mod_dir/go.sum" | cut -c1-16)"

is_current() {
  [[ ${ALB_E2E_REBUILD:-0} != 1 ]] && [[ -x $bin/helm ]] && [[ -f $bin/.stamp && $(<"$bin/.stamp") == "$stamp" ]]
}

if is_current; then
  log "using cached helm $helm_version in $bin"
  echo "$bin/helm"
  exit 0
fi

mkdir -p "$out"
exec 9>"$out/.build.lock"
if ! flock -n 9; then
  log "another build of helm $helm_version is running; waiting for it"
  flock 9
fi
if is_current; then
  log "using cached helm in $bin"
  echo "$bin/helm"
  exit 0
fi

# `helm version` reports what the release build would (the proxy gives no git commit).
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version -X helm.sh/helm/v3/internal/version.gitTreeState=clean"

export GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local
tmp=$(mktemp -d "$out/bin.tmp.XXXXXX")
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT

log "building helm $helm_version with $(go env GOVERSION)"
start=$SECONDS
cd "$mod_dir"
go build -trimpath -ldflags "$ldflags" -o "$tmp/helm" helm.sh/helm/v3/cmd/helm ||
  die "go build of helm $helm_version failed (see the go output above)"

got=$("$tmp/helm" version --template '{{.Version}}') || die "the built helm does not run"
[[ $got == "$helm_version" ]] || die "helm version says '$got', expected '$helm_version'"

rm -rf "$bin"
mv "$tmp" "$bin"
trap - EXIT
echo "$stamp" >"$bin/.stamp"
log "built in $((SECONDS - start))s into $bin"
echo "$bin/helm"
