#!/usr/bin/env bash
# A one-node Kubernetes 1.20 cluster on this machine, from Debian 12's packages and sources:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy, and a kubelet
# on containerd with runc and the CNI bridge. Certificates and the service-account key are
# made here. Images are imported locally (no registry is reachable): a static pause image,
# the sandbox image and, if asked, the gateway image.
#
# Every piece runs in a network namespace of its own (NETNS below): the pod bridge, the
# service addresses and the API server exist only there, so no traffic leaves the machine
# and nothing is reachable from the host's network. Run clients inside it with `exec`.
#
#   scripts/kubernetes/cluster.sh up [DIR]       # prints the kubeconfig's path
#   scripts/kubernetes/cluster.sh exec [DIR] -- CMD...   # CMD in the cluster's network
#   scripts/kubernetes/cluster.sh import [DIR] IMAGE     # a Docker image into the node
#   scripts/kubernetes/cluster.sh down [DIR]
#
# DIR (default /tmp/sandbox-ssh-k8s) holds the state, certificates, logs and kubeconfig.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
NETNS="${SANDBOX_SSH_K8S_NETNS:-sandbox-ssh-k8s}"
NODE_NAME=sandbox-ssh-node
NODE_IP=10.77.0.1          # exists only inside NETNS, on its loopback
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/24
API_SERVICE_IP=10.96.0.1
PAUSE_IMAGE=sandbox-ssh/pause:3.2
SANDBOX_IMAGE="${SANDBOX_SSH_TEST_IMAGE:-sandbox-ssh/sandbox:bookworm-2}"
START_TIMEOUT="${SANDBOX_SSH_K8S_START_TIMEOUT:-90}"

fail() { echo "cluster.sh: $*" >&2; exit 1; }
say() { echo "cluster.sh: $*" >&2; }

command_name="${1:-}"; shift || true
DIR=/tmp/sandbox-ssh-k8s
case "$command_name" in
    import) if [ $# -ge 2 ]; then DIR="$1"; shift; fi ;;  # import [DIR] IMAGE
    *) if [ $# -gt 0 ] && [ "$1" != "--" ]; then DIR="$1"; shift; fi ;;
esac
PKI="$DIR/pki"; LOGS="$DIR/logs"; RUN="$DIR/run"
SOCK="$RUN/containerd.sock"
in_netns() { nsenter --net="/run/netns/$NETNS" -- "$@"; }
ctr_k8s() { ctr --address "$SOCK" --namespace k8s.io "$@"; }

install_packages() {
    local missing=()
    command -v etcd >/dev/null || missing+=(etcd-server)
    [ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
    command -v containerd >/dev/null || missing+=(containerd)
    command -v runc >/dev/null || missing+=(runc)
    command -v iptables >/dev/null || missing+=(iptables)
    command -v conntrack >/dev/null || missing+=(conntrack)
    command -v openssl >/dev/null || missing+=(openssl)
    command -v curl >/dev/null || missing+=(curl)
    command -v gcc >/dev/null || missing+=(gcc libc6-dev)
    command -v kubectl >/dev/null || missing+=(kubernetes-client)
    [ ${#missing[@]} -eq 0 ] && return
    say "installing ${missing[*]} from Debian"
    # policy-rc.d keeps Debian's etcd package from starting a server on the host's loopback.
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    flock /run/lock/sandbox-ssh-apt.lock sh -c 'apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"' sh "${missing[@]}" \
        >&2 || { rm -f /usr/sbin/policy-rc.d; fail "apt-get install ${missing[*]} failed"; }
    rm -f /usr/sbin/policy-rc.d
}

# --- certificates ---------------------------------------------------------------
sign() {  # name subject [subjectAltName]
    local name="$1" subject="$2" san="${3:-}"
    openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
    openssl req -new -key "$PKI/$name.key" -subj "$subject" -out "$PKI/$name.csr" 2>/dev/null
    local ext="$PKI/$name.ext"
    printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n' >"$ext"
    [ -n "$san" ] && echo "subjectAltName=$san" >>"$ext"
    openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
        -days 30 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
    rm -f "$PKI/$name.csr" "$ext"
}

kubeconfig() {  # name server -> $DIR/name.kubeconfig with the client certificate inline
    local name="$1" server="$2"
    cat >"$DIR/$name.kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: sandbox-ssh-k8s
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $name
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$name.crt")
    client-key-data: $(base64 -w0 "$PKI/$name.key")
contexts:
- name: sandbox-ssh-k8s
  context: {cluster: sandbox-ssh-k8s, user: $name}
current-context: sandbox-ssh-k8s
KUBECONFIG
    chmod 0600 "$DIR/$name.kubeconfig"
}

make_pki() {
    mkdir -p "$PKI" && chmod 0700 "$PKI"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -days 30 \
        -subj "/CN=sandbox-ssh-k8s-ca" 2>/dev/null
    sign apiserver "/CN=kube-apiserver" \
        "IP:127.0.0.1,IP:$NODE_IP,IP:$API_SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
    sign admin "/O=system:masters/CN=sandbox-ssh-admin"
    sign controller-manager "/CN=system:kube-controller-manager"
    sign scheduler "/CN=system:kube-scheduler"
    sign kube-proxy "/CN=system:kube-proxy"
    sign kubelet "/O=system:nodes/CN=system:node:$NODE_NAME"
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
    local name
    for name in admin controller-manager scheduler kube-proxy kubelet; do
        kubeconfig "$name" "https://127.0.0.1:6443"
    done
    cp "$DIR/admin.kubeconfig" "$DIR/kubeconfig"
}

# --- processes --------------------------------------------------------------------
start() {  # name argv... : in the cluster's network namespace, logged, pid recorded
    local name="$1"; shift
    # The process writes its own PID, then becomes the program: the PID is the program's.
    nsenter --net="/run/netns/$NETNS" -- sh -c 'echo $$ >"$0"; exec setsid "$@"' \
        "$RUN/$name.pid" "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
    local deadline=$((SECONDS + 10))
    until [ -s "$RUN/$name.pid" ]; do
        [ $SECONDS -lt $deadline ] || fail "$name did not start"
        sleep 0.05
    done
}

last_lines() { tail -n 15 "$LOGS/$1.log" 2>/dev/null | sed 's/^/    /' >&2 || true; }

wait_until() {  # name description command... : polls (0.2 s) until the command succeeds
    local name="$1" what="$2"; shift 2
    local deadline=$((SECONDS + START_TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        if ! kill -0 "$(cat "$RUN/$name.pid")" 2>/dev/null; then
            say "$name exited before $what; the end of its log:"; last_lines "$name"; down_all
            fail "$name could not start (log: $LOGS/$name.log)"
        fi
        if [ $SECONDS -ge $deadline ]; then
            say "$name: no $what within ${START_TIMEOUT}s; the end of its log:"; last_lines "$name"
            down_all; fail "$name did not become ready (log: $LOGS/$name.log)"
        fi
        sleep 0.2
    done
}

kubectl_admin() { in_netns kubectl --kubeconfig "$DIR/kubeconfig" "$@"; }
node_ready() {
    [ "$(kubectl_admin get node "$NODE_NAME" \
        -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}
service_rule_present() { in_netns iptables-save | grep -q "$API_SERVICE_IP"; }

write_containerd_config() {
    mkdir -p "$DIR/cni"
    cat >"$DIR/cni/10-sandbox-ssh.conflist" <<CNI
{"cniVersion": "0.4.0", "name": "sandbox-ssh-k8s", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": "$DIR/cni-ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
CNI
    cat >"$DIR/containerd.toml" <<TOML
version = 2
root = "$DIR/containerd"
state = "$RUN/containerd"
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$DIR/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  enable_selinux = false
  # Lowering a process's OOM score needs CAP_SYS_RESOURCE, which root lacks on these
  # machines; without this, runc fails every pod with "can't get final child's PID".
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$DIR/cni"
TOML
}

pause_image_archive() {  # a docker-archive tar of the static pause binary, made without Docker
    local work="$DIR/pause-image" layer config digest
    rm -rf "$work" && mkdir -p "$work/rootfs"
    gcc -Os -static -o "$work/rootfs/pause" "$REPO_ROOT/scripts/kubernetes/pause.c" \
        || fail "could not build the pause binary (gcc, libc6-dev)"
    tar -C "$work/rootfs" -cf "$work/layer.tar" pause
    layer=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
    mkdir -p "$work/archive/$layer" && mv "$work/layer.tar" "$work/archive/$layer/layer.tar"
    config="{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Entrypoint\":[\"/pause\"]},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:$layer\"]}}"
    digest=$(printf '%s' "$config" | sha256sum | cut -d' ' -f1)
    printf '%s' "$config" >"$work/archive/$digest.json"
    printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]' \
        "$digest" "$PAUSE_IMAGE" "$layer" >"$work/archive/manifest.json"
    tar -C "$work/archive" -cf "$work/pause.tar" .
    echo "$work/pause.tar"
}

import_image() {  # a Docker image (built if it is the sandbox image) into the node's containerd
    local image="$1"
    if ! docker image inspect "$image" >/dev/null 2>&1; then
        [ "$image" = "$SANDBOX_IMAGE" ] || fail "image $image is not in Docker; build it first"
        "$REPO_ROOT/scripts/build-sandbox-image.sh" "$image" >&2 || fail "could not build $image"
    fi
    docker save "$image" | ctr_k8s images import --no-unpack=false - >&2 \
        || fail "could not import $image into the node's containerd"
}

up() {
    [ "$(id -u)" = 0 ] || fail "needs root (network namespace, containerd, kubelet)"
    [ -e "/run/netns/$NETNS" ] && fail "a cluster already runs in netns $NETNS; run: $0 down $DIR"
    install_packages
    local bin
    bin="$("$REPO_ROOT/scripts/kubernetes/build.sh")" || fail "the Kubernetes binaries could not be built"
    export PATH="$bin:$PATH"
    rm -rf "$DIR" && mkdir -p "$DIR" "$LOGS" "$RUN"
    echo "$bin" >"$DIR/bin"
    make_pki

    ip netns add "$NETNS" || fail "could not create network namespace $NETNS"
    in_netns ip link set lo up
    # The node's address, on the namespace's loopback: pods reach it through the bridge.
    in_netns ip addr add "$NODE_IP/32" dev lo || { down_all; fail "could not add $NODE_IP"; }
    # The pod bridge, made before the CNI plugin takes it over, so that Service addresses
    # have a route here: kube-proxy's DNAT happens after routing, and without a route a
    # client in this namespace gets "Network is unreachable".
    { in_netns ip link add cni0 type bridge && in_netns ip link set cni0 up &&
      in_netns ip route add "$SERVICE_CIDR" dev cni0; } || { down_all; fail "could not make the pod bridge"; }

    start etcd etcd --data-dir "$DIR/etcd" --listen-client-urls http://127.0.0.1:2379 \
        --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 \
        --initial-advertise-peer-urls http://127.0.0.1:2380 \
        --initial-cluster default=http://127.0.0.1:2380
    wait_until etcd "answer on 127.0.0.1:2379" in_netns curl -sf http://127.0.0.1:2379/health

    start kube-apiserver kube-apiserver --etcd-servers=http://127.0.0.1:2379 \
        --bind-address=0.0.0.0 --secure-port=6443 --advertise-address="$NODE_IP" --insecure-port=0 \
        --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
        --client-ca-file="$PKI/ca.crt" --authorization-mode=Node,RBAC \
        --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --service-cluster-ip-range="$SERVICE_CIDR" \
        --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
        --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
        --kubelet-preferred-address-types=InternalIP --allow-privileged=false
    wait_until kube-apiserver "/readyz" kubectl_admin get --raw /readyz

    start kube-controller-manager kube-controller-manager --kubeconfig="$DIR/controller-manager.kubeconfig" \
        --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
        --use-service-account-credentials=true --leader-elect=false --port=0 \
        --bind-address=127.0.0.1 --secure-port=10257
    start kube-scheduler kube-scheduler --kubeconfig="$DIR/scheduler.kubeconfig" --leader-elect=false \
        --port=0 --bind-address=127.0.0.1 --secure-port=10259

    write_containerd_config
    start containerd containerd --config "$DIR/containerd.toml"
    wait_until containerd "answer on $SOCK" ctr_k8s version
    ctr_k8s images import - <"$(pause_image_archive)" >&2 || fail "could not import the pause image"
    import_image "$SANDBOX_IMAGE"

    mkdir -p "$DIR/kubelet"
    # The kubelet mounts volumes under its root; shared propagation lets runc's mount
    # namespaces see them.
    mount --bind "$DIR/kubelet" "$DIR/kubelet" && mount --make-rshared "$DIR/kubelet"
    printf 'nameserver 127.0.0.1\n' >"$DIR/resolv.conf"
    start kubelet kubelet --kubeconfig="$DIR/kubelet.kubeconfig" --hostname-override="$NODE_NAME" \
        --node-ip="$NODE_IP" --container-runtime=remote --container-runtime-endpoint="unix://$SOCK" \
        --root-dir="$DIR/kubelet" --cert-dir="$DIR/kubelet-pki" --cgroup-driver=cgroupfs \
        --fail-swap-on=false --client-ca-file="$PKI/ca.crt" --anonymous-auth=false \
        --authorization-mode=AlwaysAllow --read-only-port=0 --healthz-bind-address=127.0.0.1 \
        --resolv-conf="$DIR/resolv.conf" --image-gc-high-threshold=100 --image-gc-low-threshold=99 \
        --eviction-hard="memory.available<100Mi,nodefs.available<1%,imagefs.available<1%" \
        --runtime-request-timeout=15m --register-node=true
    wait_until kubelet "a Ready node" node_ready

    start kube-proxy kube-proxy --kubeconfig="$DIR/kube-proxy.kubeconfig" --hostname-override="$NODE_NAME" \
        --cluster-cidr="$POD_CIDR" --proxy-mode=iptables --conntrack-max-per-core=0 \
        --conntrack-tcp-timeout-established=0 --conntrack-tcp-timeout-close-wait=0 \
        --metrics-bind-address=127.0.0.1:10249 --healthz-bind-address=127.0.0.1:10256
    wait_until kube-proxy "the kubernetes Service's rule" service_rule_present
    # The default ServiceAccount's token is what pods mount; it is made by the controller-manager.
    wait_until kube-controller-manager "a default ServiceAccount" kubectl_admin get serviceaccount default
    echo "$DIR/kubeconfig"
}

down_all() {
    set +e
    local pod_netns=""
    if [ -S "$SOCK" ]; then
        [ -f "$DIR/kubeconfig" ] && timeout 30 in_netns kubectl --kubeconfig "$DIR/kubeconfig" \
            delete pods --all-namespaces --all --grace-period=0 --force >/dev/null 2>&1
        local name
        for name in kubelet kube-proxy; do [ -f "$RUN/$name.pid" ] && kill "$(cat "$RUN/$name.pid")"; done
        # The pods' network namespaces, named by containerd's CRI in /run/netns.
        pod_netns=$(for id in $(ctr_k8s containers ls -q 2>/dev/null); do ctr_k8s containers info "$id"; done \
            | grep -o '/netns/cni-[0-9a-f-]*' | sort -u | cut -d/ -f3)
        for task in $(ctr_k8s tasks ls -q 2>/dev/null); do ctr_k8s tasks kill -s KILL "$task"; done
        for task in $(ctr_k8s tasks ls -q 2>/dev/null); do ctr_k8s tasks delete -f "$task"; done >/dev/null 2>&1
    fi
    for name in kubelet kube-proxy kube-scheduler kube-controller-manager kube-apiserver containerd etcd; do
        [ -f "$RUN/$name.pid" ] && kill "$(cat "$RUN/$name.pid")" 2>/dev/null
    done
    pkill -f "containerd-shim-runc-v2 -namespace k8s.io -address $SOCK" 2>/dev/null
    for name in kubelet kube-proxy kube-scheduler kube-controller-manager kube-apiserver containerd etcd; do
        [ -f "$RUN/$name.pid" ] && timeout 20 tail --pid="$(cat "$RUN/$name.pid")" -f /dev/null
        rm -f "$RUN/$name.pid"
    done
    local round
    for round in 1 2 3 4 5; do  # shared propagation can leave a copy for the next round
        grep -q " $DIR/" /proc/mounts || break
        grep -o " $DIR/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
    done
    for cgroup in /sys/fs/cgroup/*/kubepods; do
        [ -d "$cgroup" ] && find "$cgroup" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
    for name in ${pod_netns:-}; do ip netns del "$name" 2>/dev/null; done
    ip netns del "$NETNS" 2>/dev/null
    set -e
}

case "$command_name" in
    up) up ;;
    down) down_all; rm -rf "$DIR"; say "stopped" ;;
    exec)
        [ "${1:-}" = "--" ] && shift
        [ -e "/run/netns/$NETNS" ] || fail "no cluster runs (netns $NETNS is missing)"
        PATH="$(cat "$DIR/bin"):$PATH" exec nsenter --net="/run/netns/$NETNS" -- "$@" ;;
    import) import_image "${1:?an image name}" ;;
    *) fail "usage: $0 up|exec|import|down [DIR]" ;;
esac
