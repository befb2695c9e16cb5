#!/usr/bin/env bash
# The Kubernetes suites against a real one-node Kubernetes 1.20 cluster built from Debian 12's
# sources (scripts/kubernetes/cluster.sh): the provider conformance suite, the end-to-end
# Kubernetes tests, and deploy/kubernetes/ applied for real. scripts/test.sh runs it as its last
# pass, having started the build (about 7 minutes on 2 cores, cached) in the background first.
#
#   ./scripts/test-kubernetes.sh [PYTEST ARGS...]
set -euo pipefail
source "$(dirname "$0")/_setup.sh"

install_system_packages
install_python_package "[test]"
start_dockerd
cd "$REPO_ROOT"
STATE=/tmp/sandbox-ssh-k8s
CLUSTER="$REPO_ROOT/scripts/kubernetes/cluster.sh"
"$REPO_ROOT/scripts/build-sandbox-image.sh"
# The gateway image under the tag deploy/kubernetes/deployment.yaml names.
GATEWAY_IMAGE="$(sed -n 's/^ *image: \(sandbox-ssh\/gateway:.*\)$/\1/p' deploy/kubernetes/deployment.yaml | head -n1)"
"$REPO_ROOT/scripts/build-gateway-image.sh" "$GATEWAY_IMAGE"

"$CLUSTER" down "$STATE" >/dev/null 2>&1 || true
echo "=== a Kubernetes 1.20 cluster ($(date -u +%H:%M:%S)) ==="
kubeconfig="$("$CLUSTER" up "$STATE")"
trap '"$CLUSTER" down "$STATE"' EXIT
"$CLUSTER" import "$STATE" "$GATEWAY_IMAGE"

echo "=== the Kubernetes suites against it ($(date -u +%H:%M:%S)) ==="
(($#)) || set -- tests/conformance tests/e2e/test_kubernetes.py tests/e2e/test_deploy_kubernetes.py \
    -k "not docker and not emulated and not broker"
"$CLUSTER" exec "$STATE" -- env SANDBOX_SSH_TEST_KUBECONFIG="$kubeconfig" \
    "$VENV/bin/python" -m pytest "$@"
