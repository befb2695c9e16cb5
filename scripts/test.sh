#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian 12 machine, then run lint, types and tests.
# The test suite itself starts dockerd and builds the sandbox image when they are missing.
set -euo pipefail
source "$(dirname "$0")/_setup.sh"

install_system_packages
install_python_package "[test]"
cd "$REPO_ROOT"
"$VENV/bin/ruff" check src tests bench
"$VENV/bin/ruff" format --check src tests bench
"$VENV/bin/mypy"
exec "$VENV/bin/python" -m pytest "$@"
