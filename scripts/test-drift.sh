#!/usr/bin/env bash
# Dependency drift: install the newest release of every dependency (ignoring the lock files),
# then run the unit tests and one end-to-end file (operability: start-up, JSON logs, metrics,
# SIGTERM drain), so that a new release that breaks us is seen here before users see it.
# Prints which versions differ from requirements/test.lock. Run by scripts/test.sh as its last
# pass; alone: ./scripts/test-drift.sh
set -euo pipefail
source "$(dirname "$0")/_setup.sh"
DRIFT_VENV="${SANDBOX_SSH_DRIFT_VENV:-$REPO_ROOT/.venv-drift}"
install_system_packages
rm -rf "$DRIFT_VENV"
"$BASE_PYTHON" -m venv "$DRIFT_VENV"
"$DRIFT_VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
"$DRIFT_VENV/bin/python" -m pip install -q --upgrade --upgrade-strategy eager -e "$REPO_ROOT[test]"
echo "newest releases that differ from requirements/test.lock:"
"$DRIFT_VENV/bin/python" - "$REPO_ROOT/requirements/test.lock" <<'PY'
import re, subprocess, sys
locked = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", open(sys.argv[1]).read(), re.M))
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
locked = {norm(k): v for k, v in locked.items()}
frozen = subprocess.run([sys.executable, "-m", "pip", "list", "--format=freeze"],
                        capture_output=True, text=True, check=True).stdout
newer = [f"  {name}: {locked[norm(name)]} -> {version}" for name, version in
         re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", frozen, re.M)
         if norm(name) in locked and locked[norm(name)] != version]
print("\n".join(newer) or "  none")
PY
cd "$REPO_ROOT"
exec "$DRIFT_VENV/bin/python" -m pytest tests/unit tests/e2e/test_operability.py "$@"
