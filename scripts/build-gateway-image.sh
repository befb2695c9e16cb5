#!/usr/bin/env bash
# Build the gateway's container image from Debian packages and the project's wheels, with no
# image registry: a debootstrap base (cached by tag), then deploy/container/Containerfile.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TAG="${1:-sandbox-ssh/gateway:latest}"
BASE="sandbox-ssh/gateway-base:bookworm-1"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PYTHON="${PYTHON:-$REPO_ROOT/.venv/bin/python}"

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
    command -v debootstrap >/dev/null || {
        flock /run/lock/sandbox-ssh-apt.lock sh -c 'apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null'
    }
    ROOT="$(mktemp -d /tmp/gateway-rootfs.XXXXXX)"
    trap 'rm -rf "$ROOT"' EXIT
    echo "building $BASE with debootstrap (about a minute)"
    debootstrap --variant=minbase --include=python3,python3-venv,runc,ca-certificates,openssh-client \
        bookworm "$ROOT" "$MIRROR" >"$ROOT.log" 2>&1 || { tail -20 "$ROOT.log" >&2; exit 1; }
    rm -f "$ROOT.log"
    rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/*
    tar -C "$ROOT" -c . | docker import - "$BASE" >/dev/null
fi

CONTEXT="$(mktemp -d /tmp/gateway-context.XXXXXX)"
trap 'rm -rf "$CONTEXT"' EXIT
# The dependencies at the locked versions and hashes (wheels for this machine, which is the
# image's Debian 12 and Python 3.11), then the project itself.
"$PYTHON" -m pip download -q --require-hashes --only-binary :all: --no-deps \
    --dest "$CONTEXT/wheels" -r "$REPO_ROOT/requirements/runtime.lock"
"$PYTHON" -m pip wheel -q --no-deps --wheel-dir "$CONTEXT/wheels" "$REPO_ROOT"
cp "$REPO_ROOT/requirements/runtime.lock" "$CONTEXT/runtime.lock"
cp "$REPO_ROOT/deploy/container/Containerfile" "$CONTEXT/Containerfile"
docker build -q -f "$CONTEXT/Containerfile" --build-arg "BASE=$BASE" -t "$TAG" "$CONTEXT" >/dev/null
echo "built $TAG"
