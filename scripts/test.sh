#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian 12 machine, then run lint, types and tests.
# The test suite itself starts dockerd and builds the sandbox image when they are missing.
#
# With no arguments: the whole suite with the gateways on the runtime exec path (the default;
# the conformance suite covers both paths), then the end-to-end suite again on the API path.
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
echo "=== pass 1 of 2: everything, gateways on the runtime exec path ==="
status=0
"$VENV/bin/python" -m pytest || status=$?
echo "=== pass 2 of 2: end-to-end again, gateways on Docker's exec API ==="
"$VENV/bin/python" -m pytest tests/e2e --exec-path api -m "not runtime_path" || status=$?
exit "$status"
