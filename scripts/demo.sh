#!/usr/bin/env bash
# Install sandbox-ssh, start a demo sandbox, and run the gateway on 127.0.0.1:2222.
set -euo pipefail
source "$(dirname "$0")/_setup.sh"

install_system_packages
install_python_package "[speed]"
start_dockerd
IMAGE=sandbox-ssh/sandbox:bookworm-2
"$REPO_ROOT/scripts/build-sandbox-image.sh" "$IMAGE"

SESSION="${1:-demo}"
if ! docker container inspect sandbox-ssh-demo >/dev/null 2>&1; then
    docker create --name sandbox-ssh-demo --init --network none --user dev \
        --label sandbox-ssh.session="$SESSION" "$IMAGE" >/dev/null
fi
echo
echo "Demo sandbox: container sandbox-ssh-demo, session ID \"$SESSION\" (stopped; started on connect)."
echo "In another terminal, connect with:"
echo
echo "    ssh -p 2222 -o StrictHostKeyChecking=accept-new $SESSION@127.0.0.1"
echo
exec "$VENV/bin/sandbox-ssh" serve --listen 127.0.0.1:2222
