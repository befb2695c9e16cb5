#!/usr/bin/env bash
# Build the sandbox image used by the demo and the tests from Debian packages
# (no image registry needed), and cache it by tag: a second run is a no-op.
set -euo pipefail

TAG="${1:-sandbox-ssh/sandbox:bookworm-2}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES="bash,coreutils,procps,openssh-sftp-server,openssh-server,rsync,socat,python3,git,ca-certificates"

if docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "image $TAG is cached"
    exit 0
fi
command -v debootstrap >/dev/null || {
    flock /run/lock/sandbox-ssh-apt.lock sh -c 'apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null'
}

ROOT="$(mktemp -d /tmp/sandbox-rootfs.XXXXXX)"
trap 'rm -rf "$ROOT"' EXIT
echo "building $TAG with debootstrap (about 30-60 s)"
debootstrap --variant=minbase --include="$PACKAGES" bookworm "$ROOT" "$MIRROR" >"$ROOT.log" 2>&1 || {
    tail -20 "$ROOT.log" >&2; exit 1
}
rm -f "$ROOT.log"

# A non-root user like a dev-environment image would have.
echo 'dev:x:1000:1000:Developer,,,:/home/dev:/bin/bash' >>"$ROOT/etc/passwd"
echo 'dev:x:1000:' >>"$ROOT/etc/group"
echo 'dev:*:19000:0:99999:7:::' >>"$ROOT/etc/shadow"
mkdir -p "$ROOT/home/dev"
chown 1000:1000 "$ROOT/home/dev"
chmod 0755 "$ROOT/home/dev"
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/*

tar -C "$ROOT" -c . | docker import \
    --change 'CMD ["sleep", "infinity"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - "$TAG" >/dev/null
echo "built $TAG"
