#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian 12 machine, then run lint, types and tests.
# The test suite itself starts dockerd and builds the sandbox image when they are missing.
#
# With no arguments: the whole suite with the gateways on the runtime exec path (the default;
# the conformance suite covers both paths), then the end-to-end suite again on the API path,
# then the conformance suite and the main end-to-end paths against rootful Podman, on both paths,
# then the unit tests and one end-to-end file on the newest release of every dependency.
# With arguments: one pytest run with them, e.g. `./scripts/test.sh tests/unit -q` or
# `./scripts/test.sh tests/e2e --exec-path api`.
set -euo pipefail
source "$(dirname "$0")/_setup.sh"

install_system_packages
install_python_package "[test]"
cd "$REPO_ROOT"
"$VENV/bin/ruff" check src tests bench
"$VENV/bin/ruff" format --check src tests bench
"$VENV/bin/mypy"
if (($#)); then
    exec "$VENV/bin/python" -m pytest "$@"
fi
# What Podman must keep working: exec, PTY, SFTP/scp/rsync, forwarding (-L/-D/-W/-R, unix
# sockets), ensure, user lookup and environment, and sandbox selection.
PODMAN_E2E=(tests/e2e/test_exec.py tests/e2e/test_pty.py tests/e2e/test_file_transfer.py
    tests/e2e/test_forwarding.py tests/e2e/test_lifecycle.py tests/e2e/test_environment.py
    tests/e2e/test_sandbox_selection.py)
status=0
run_pass() {
    echo "=== $1 ($(date -u +%H:%M:%S)) ==="
    shift
    "$VENV/bin/python" -m pytest "$@" || status=$?
}
run_pass "pass 1 of 3: everything, gateways on the runtime exec path"
run_pass "pass 2 of 3: end-to-end again, gateways on Docker's exec API" \
    tests/e2e --exec-path api -m "not runtime_path and not path_independent"
run_pass "pass 3 of 3: conformance and main paths on rootful Podman, runtime exec path" \
    tests/conformance "${PODMAN_E2E[@]}" --engine podman
run_pass "pass 3 of 3, continued: main paths on rootful Podman, Podman's exec API" \
    "${PODMAN_E2E[@]}" --engine podman --exec-path api -m "not runtime_path"
echo "=== dependency drift: the newest releases, unit tests and operability ($(date -u +%H:%M:%S)) ==="
"$REPO_ROOT/scripts/test-drift.sh" -q || status=$?
exit "$status"
