#!/usr/bin/env bash
# Builds the Kubernetes 1.20 server binaries from Debian 12's source package.
# No registry serves them here; Debian's orig tarball is the only server source
# these networks carry. Cached by version: a second run prints the folder at once.
#
#   scripts/kubernetes/build.sh        # prints the folder holding the binaries
set -euo pipefail

K8S_DEBIAN_VERSION="${K8S_DEBIAN_VERSION:-1.20.5+really1.20.2-1.1+deb12u1}"
CACHE_ROOT="${SANDBOX_SSH_K8S_CACHE:-/var/cache/sandbox-ssh/kubernetes}"
BIN_DIR="$CACHE_ROOT/$K8S_DEBIAN_VERSION/bin"
COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

fail() { echo "build.sh: $*" >&2; exit 1; }

have_all() {
    local name
    for name in "${COMPONENTS[@]}"; do [ -x "$BIN_DIR/$name" ] || return 1; done
}

if have_all; then echo "$BIN_DIR"; exit 0; fi

[ "$(id -u)" = 0 ] || fail "needs root to install golang-go and dpkg-dev"
export DEBIAN_FRONTEND=noninteractive
command -v go >/dev/null && command -v dpkg-source >/dev/null && command -v make >/dev/null \
    || flock /run/lock/sandbox-ssh-apt.lock sh -c \
        'apt-get update -qq && apt-get install -y -qq golang-go dpkg-dev make rsync' >&2 \
    || fail "could not install golang-go, dpkg-dev and make from Debian"

work="$CACHE_ROOT/$K8S_DEBIAN_VERSION/src"
rm -rf "$work" && mkdir -p "$work"
# A private package list with a deb-src line, so the system's apt sources stay untouched.
lists="$work/apt-lists"
mkdir -p "$lists/partial"
echo "deb-src http://deb.debian.org/debian bookworm main
deb-src http://deb.debian.org/debian-security bookworm-security main" >"$work/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=-"
          -o "Dir::State::Lists=$lists")
apt-get "${apt_opts[@]}" update -qq >&2 || fail "apt-get update of the deb-src lists failed"
(cd "$work" && apt-get "${apt_opts[@]}" source --download-only -qq "kubernetes=$K8S_DEBIAN_VERSION" >&2) \
    || fail "apt-get source kubernetes=$K8S_DEBIAN_VERSION failed"
(cd "$work" && dpkg-source --no-check -x ./*.dsc tree >&2) || fail "dpkg-source could not unpack the source"

tree="$work/tree"
# Upstream's make wants the GOPATH layout that Debian's own rules set up;
# a plain `go build -mod=vendor` stops at "updates to go.mod needed".
mkdir -p "$tree/.go/src/k8s.io"
ln -sfn ../../.. "$tree/.go/src/k8s.io/kubernetes"
targets=""
for name in "${COMPONENTS[@]}"; do targets+="cmd/$name "; done
(
    cd "$tree/.go/src/k8s.io/kubernetes"
    GOPATH="$tree/.go" GO111MODULE=off GOFLAGS= CGO_ENABLED=0 KUBE_GIT_VERSION=v1.20.2 \
        KUBE_GIT_TREE_STATE=clean make WHAT="${targets% }" >&2
) || fail "make WHAT=\"$targets\" failed (see the lines above)"

mkdir -p "$BIN_DIR.tmp"
for name in "${COMPONENTS[@]}"; do
    cp "$tree/_output/local/go/bin/$name" "$BIN_DIR.tmp/$name" 2>/dev/null \
        || cp "$tree/_output/bin/$name" "$BIN_DIR.tmp/$name" \
        || fail "$name was not built"
done
rm -rf "$BIN_DIR" && mv "$BIN_DIR.tmp" "$BIN_DIR"
rm -rf "$work"
echo "$BIN_DIR"
