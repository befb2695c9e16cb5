#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian 12 machine, then run lint, types and tests.
# The test suite itself starts dockerd and builds the sandbox image when they are missing.
#
# With no arguments, every pass, each printed with its start time, then a table of each
# pass's wall time and the slowest tests (scripts/test-report.py):
#   1. everything, gateways on the runtime exec path: in parallel (pytest-xdist), then the
#      tests marked `serial` (time bounds, dockerd stopped) alone;
#   2. the end-to-end suite again on the API path, split the same way;
#   3. the conformance suite and the main end-to-end paths on rootful Podman, on both paths;
#   4. dependency drift: the unit tests and one end-to-end file on the newest releases;
#   5. the Kubernetes suites on a real cluster built from Debian's sources
#      (scripts/test-kubernetes.sh). Its build (about 7 minutes on 2 cores, cached) starts
#      first, in the background at the lowest CPU priority, so that it takes only the time
#      the other passes leave idle.
# With arguments: one pytest run with them, e.g. `./scripts/test.sh tests/unit -q`,
# `./scripts/test.sh tests/e2e --exec-path api -n 4`.
#
# SANDBOX_SSH_TEST_WORKERS sets the parallel passes' workers (default 6: the tests mostly
# wait for handshakes, container starts and the regress scripts' sleeps, not for the CPU).
set -euo pipefail
source "$(dirname "$0")/_setup.sh"

install_system_packages
install_python_package "[test]"
cd "$REPO_ROOT"
"$VENV/bin/ruff" check src tests bench scripts
"$VENV/bin/ruff" format --check src tests bench scripts
"$VENV/bin/mypy"
if (($#)); then
    exec "$VENV/bin/python" -m pytest "$@"
fi

WORKERS="${SANDBOX_SSH_TEST_WORKERS:-6}"
PARALLEL=(-n "$WORKERS" --dist worksteal)
REPORTS="$(mktemp -d /tmp/sandbox-ssh-test-reports.XXXXXX)"
PASSES="$REPORTS/passes.tsv"
: >"$PASSES"
if [ -n "${SANDBOX_SSH_TEST_CI_STARTED:-}" ]; then  # .ci/run's: its set-up and benchmark, lint, types
    printf '%s\t%s\t0\t\n' "0 set-up, quick benchmark, lint, types" \
        "$(($(date +%s) - SANDBOX_SSH_TEST_CI_STARTED))" >>"$PASSES"
fi

# The Kubernetes build, in the background at the lowest priority (nice 19, idle I/O class).
K8S_BUILD_LOG="$REPORTS/kubernetes-build.log"
nice -n 19 ionice -c 3 "$REPO_ROOT/scripts/kubernetes/build.sh" >"$K8S_BUILD_LOG" 2>&1 &
K8S_BUILD=$!

# What Podman must keep working: exec, PTY, SFTP/scp/rsync, forwarding (-L/-D/-W/-R, unix
# sockets), ensure, user lookup and environment, and sandbox selection.
PODMAN_E2E=(tests/e2e/test_exec.py tests/e2e/test_pty.py tests/e2e/test_file_transfer.py
    tests/e2e/test_forwarding.py tests/e2e/test_lifecycle.py tests/e2e/test_environment.py
    tests/e2e/test_sandbox_selection.py)
status=0
# run_pass NAME COMMAND...: run one pass, its JUnit XML in $REPORTS, and note its time.
run_pass() {
    local name="$1" junit started rc=0
    shift
    junit="$REPORTS/$(wc -l <"$PASSES").xml"
    started=$(date +%s)
    echo "=== $name ($(date -u +%H:%M:%S)) ==="
    PYTEST_ADDOPTS="--junitxml=$junit ${PYTEST_ADDOPTS:-}" "$@" || rc=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$(($(date +%s) - started))" "$rc" "$junit" >>"$PASSES"
    ((rc == 0)) || status=$rc
}
pytest=("$VENV/bin/python" -m pytest)

run_pass "1a runtime path, parallel" "${pytest[@]}" tests -m "not serial" "${PARALLEL[@]}"
run_pass "1b runtime path, serial" "${pytest[@]}" tests -m serial
API_ONLY="not runtime_path and not path_independent"
run_pass "2a API path, parallel" \
    "${pytest[@]}" tests/e2e --exec-path api -m "$API_ONLY and not serial" "${PARALLEL[@]}"
run_pass "2b API path, serial" "${pytest[@]}" tests/e2e --exec-path api -m "$API_ONLY and serial"
run_pass "3a Podman, runtime path" \
    "${pytest[@]}" tests/conformance "${PODMAN_E2E[@]}" --engine podman "${PARALLEL[@]}"
run_pass "3b Podman, exec API" \
    "${pytest[@]}" "${PODMAN_E2E[@]}" --engine podman --exec-path api -m "not runtime_path" \
    "${PARALLEL[@]}"
run_pass "4 dependency drift" "$REPO_ROOT/scripts/test-drift.sh" -q
k8s_wait_started=$(date +%s)
if ! wait "$K8S_BUILD"; then
    echo "the Kubernetes build failed:" >&2
    tail -30 "$K8S_BUILD_LOG" >&2
fi
echo "(the Kubernetes build was waited for $(($(date +%s) - k8s_wait_started)) s)"
run_pass "5 Kubernetes, real cluster" "$REPO_ROOT/scripts/test-kubernetes.sh"

"$VENV/bin/python" "$REPO_ROOT/scripts/test-report.py" "$PASSES" 15
exit "$status"
