#!/usr/bin/env bash
# Build kube-apiserver, etcd and kubectl from the Go modules pinned in
# e2e/cluster/build/go.mod, into a cache outside the repository:
#
#   ${ALB_E2E_CACHE:-$HOME/.cache/alb-rs-e2e}/k8s-<version>/bin/{kube-apiserver,etcd,kubectl}
#
# Does nothing when those binaries exist and were built from the current
# go.mod/go.sum. Prints the bin directory as the last line of stdout; progress
# goes to stderr.
#
# Env:
#   ALB_E2E_CACHE    cache root (default: $HOME/.cache/alb-rs-e2e)
#   ALB_E2E_REBUILD  1 = rebuild even if the cached binaries are current
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mod_dir=$here/build

log() { printf 'cluster/build: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v go >/dev/null || die "go is not in PATH (Go >= 1.24 is needed to build the control plane)"
command -v flock >/dev/null || die "flock is not in PATH (util-linux)"

# The versions come from go.mod, the single place where they are pinned.
mod_version() { awk -v m="$1" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$mod_dir/go.mod"; }
k8s_version=$(mod_version k8s.io/kubernetes)
etcd_version=$(mod_version go.etcd.io/etcd/server/v3)
[[ -n $k8s_version && -n $etcd_version ]] ||
  die "cannot read the k8s.io/kubernetes and go.etcd.io/etcd/server/v3 versions from $mod_dir/go.mod"

cache_root=${ALB_E2E_CACHE:-$HOME/.cache/alb-rs-e2e}
out=$cache_root/k8s-$k8s_version
bin=$out/bin

# The stamp says what the cached binaries were built from; any change to the
# pinned module graph (go.mod/go.sum) or to this recipe's version triggers a rebuild.
recipe=1
stamp="recipe=$recipe k8s=$k8s_version etcd=$etcd_version go.mod=$(sha256sum <"$mod_dir/go.mod" | cut -c1-16) go.sum=$(sha256sum <"$mod_dir/go.sum" | cut -c1-16)"

is_current() {
  [[ ${ALB_E2E_REBUILD:-0} != 1 ]] &&
    [[ -x $bin/kube-apiserver && -x $bin/etcd && -x $bin/kubectl ]] &&
    [[ -f $bin/.stamp && $(<"$bin/.stamp") == "$stamp" ]]
}

if is_current; then
  log "using cached kube-apiserver/etcd/kubectl $k8s_version (etcd $etcd_version) in $bin"
  echo "$bin"
  exit 0
fi

# Two `up`s started together must not both build into the same directory.
mkdir -p "$out"
exec 9>"$out/.build.lock"
if ! flock -n 9; then
  log "another build of $k8s_version is running; waiting for it"
  flock 9
fi
if is_current; then # the other build finished it
  log "using cached binaries in $bin"
  echo "$bin"
  exit 0
fi

# Same ldflags the Kubernetes release build sets, so `kube-apiserver --version`,
# /version and `kubectl version` report the real release. The module proxy does
# not give us the release's git commit, so gitCommit stays empty.
IFS=. read -r major minor _ <<<"${k8s_version#v}"
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitCommit= -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done

export GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local
tmp=$(mktemp -d "$out/bin.tmp.XXXXXX")
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT

log "building Kubernetes $k8s_version (kube-apiserver, kubectl) and etcd $etcd_version with $(go env GOVERSION)"
log "a cold build downloads ~600 MB of Go modules and compiles for ~5 minutes on 2 cores"
start=$SECONDS
cd "$mod_dir"
go build -trimpath -ldflags "$ldflags" -o "$tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kubectl ||
  die "go build of kube-apiserver/kubectl $k8s_version failed (see the go output above)"
# etcd's main package is the root of go.etcd.io/etcd/server/v3; `go build`
# would name it "v3", hence the explicit -o.
go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3 ||
  die "go build of etcd $etcd_version failed (see the go output above)"

# Sanity check before publishing the binaries.
got=$("$tmp/kube-apiserver" --version) || die "the built kube-apiserver does not run"
[[ $got == "Kubernetes $k8s_version" ]] || die "kube-apiserver --version says '$got', expected 'Kubernetes $k8s_version'"
# Read the whole output first: `grep -q` exits at the first match, and under pipefail the SIGPIPE etcd then gets
# would fail the check at random.
etcd_says=$("$tmp/etcd" --version) || die "the built etcd does not run"
grep -qx "etcd Version: ${etcd_version#v}" <<<"$etcd_says" || die "the built etcd does not report version ${etcd_version#v}"

rm -rf "$bin"
mv "$tmp" "$bin"
trap - EXIT
echo "$stamp" >"$bin/.stamp"
log "built in $((SECONDS - start))s into $bin"
echo "$bin"
