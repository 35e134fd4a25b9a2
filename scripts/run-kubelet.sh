#!/usr/bin/env bash
# run-kubelet.sh: the README's first command. On a fresh Debian 12 machine,
# as root: installs the test bed, starts a private containerd, builds the
# example kubelet and runs it on the manifests of examples/manifests (seed
# 004's Burstable pod, seed 002's two containers sharing a network and an
# emptyDir, a run-to-completion job). It shows the kubelet's log, the
# containers as containerd sees them and seed 004's cgroup limits, then
# stops the kubelet (SIGTERM: the pods keep running, as upstream), and
# finally stops containerd and removes everything it created.
#
# RUN_SECONDS (default 30) sets how long the kubelet runs.
#
# CLUSTER=1 runs it in cluster mode instead: the script also starts the test
# bed's control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler v1.35, built from Go modules by install.sh) and a node
# address on a veth pair of its own; the kubelet registers the Node, mirrors
# the static pods, runs a Deployment of two the scheduler binds to it, and
# the script shows `kubectl get nodes,pods -o wide`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/testbed/install.sh
cargo build --quiet --example kubelet
dir="$(mktemp -d /tmp/kubelet-run-XXXXXX)"
cgroup_root="kubelet-run-$$"
kubelet_pid=""
cluster="${CLUSTER:-}"
node=demo-node
cleanup() {
	[ -n "$kubelet_pid" ] && kill "$kubelet_pid" 2>/dev/null || true
	if [ -n "$cluster" ]; then
		scripts/testbed/controlplane-stop.sh "$dir/cp" || true
		scripts/testbed/node-net.sh down "$node" || true
	fi
	scripts/testbed/stop.sh "$dir" || true
	for d in /sys/fs/cgroup/*/"$cgroup_root"; do
		[ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
	done
}
trap cleanup EXIT
scripts/testbed/start.sh "$dir"
mkdir -p "$dir/manifests" "$dir/root"
cp examples/manifests/*.yaml "$dir/manifests/"
cat > "$dir/kubelet.yaml" <<CONFIG
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
staticPodPath: $dir/manifests
containerRuntimeEndpoint: unix://$dir/containerd.sock
cgroupRoot: /$cgroup_root
podLogsDir: $dir/pod-logs
port: ${KUBELET_PORT:-10250}
# The test bed's images cannot be pulled again (no registry is reachable):
# on a nearly full disk, disk-pressure eviction and image GC would delete
# them, as upstream's kubelet would. Watch memory only; no image GC.
evictionHard: {memory.available: 100Mi}
imageGCHighThresholdPercent: 100
CONFIG

echo "== kubelet explain frontend.yaml (the prediction, before anything runs)"
"${CARGO_TARGET_DIR:-target}/debug/examples/kubelet" --config "$dir/kubelet.yaml" \
	--hostname-override demo-node explain "$dir/manifests/frontend.yaml"

cluster_flags=()
if [ -n "$cluster" ]; then
	echo "== cluster mode: a control plane and a node address of its own"
	scripts/testbed/controlplane-start.sh "$dir/cp" "$node"
	node_ip="$(scripts/testbed/node-net.sh up "$node" | tail -1)"
	. "$dir/cp/controlplane.env"
	# The node API's serving certificate from the cluster CA (what TLS
	# bootstrap would get approved): the API server verifies kubelets
	# against that CA for `kubectl logs` and the node proxy.
	scripts/testbed/kubelet-cert.sh "$dir/cp" "$node" "$node_ip" "$dir/kubelet-serving"
	cluster_flags=(--kubeconfig "$dir/cp/node.kubeconfig" --node-ip "$node_ip"
		--tls-cert-file "$dir/kubelet-serving.crt" --tls-private-key-file "$dir/kubelet-serving.key"
		--client-ca-file "$CA_CERT")
	kubectl=("$KUBECTL" --kubeconfig "$dir/cp/admin.kubeconfig")
fi

echo "== kubelet --config $dir/kubelet.yaml ${cluster_flags[*]}"
"${CARGO_TARGET_DIR:-target}/debug/examples/kubelet" --config "$dir/kubelet.yaml" --root-dir "$dir/root" \
	--hostname-override "$node" "${cluster_flags[@]}" >"$dir/kubelet.log" 2>&1 &
kubelet_pid=$!
if [ -n "$cluster" ]; then
	sleep 5
	echo "== kubectl create deployment sleepers --replicas=2 (the scheduler binds them to $node)"
	"${kubectl[@]}" create deployment sleepers --image=localhost/busybox:latest --replicas=2 -- sleep 3600
	# `:latest` defaults to imagePullPolicy Always; no registry is reachable.
	"${kubectl[@]}" patch deployment sleepers --type=strategic \
		-p '{"spec":{"template":{"spec":{"terminationGracePeriodSeconds":2,"containers":[{"name":"busybox","imagePullPolicy":"IfNotPresent"}]}}}}'
fi
sleep "${RUN_SECONDS:-30}"
if ! kill -0 "$kubelet_pid" 2>/dev/null; then
	echo "the kubelet exited early:" >&2
	tail -20 "$dir/kubelet.log" >&2
	exit 1
fi

echo "== the kubelet's log (pod status changes)"
grep -E "pod status|PLEG|rejected|error|ERROR|WARN" "$dir/kubelet.log" | sed -e 's/\x1b\[[0-9;]*m//g' | cut -c1-220 || true
echo "== containers in containerd (namespace k8s.io)"
. "$dir/testbed.env"
"$CTR" --address "$CONTAINERD_SOCKET" -n k8s.io tasks ls
echo "== seed 004: what landed in the frontend container's cgroup"
for f in /sys/fs/cgroup/memory/"$cgroup_root"/kubepods/burstable/pod*/*/memory.limit_in_bytes \
	/sys/fs/cgroup/cpu/"$cgroup_root"/kubepods/burstable/pod*/*/cpu.cfs_quota_us; do
	[ -f "$f" ] && echo "$f = $(cat "$f")"
done
port="${KUBELET_PORT:-10250}"
if [ -z "$cluster" ] && command -v curl >/dev/null; then
	echo "== node API: curl http://127.0.0.1:$port/healthz, /pods (names and phases), /metrics (a few)"
	curl -s "http://127.0.0.1:$port/healthz"; echo
	curl -s "http://127.0.0.1:$port/pods" | grep -o '"name":"[a-z0-9-]*-demo-node"\|"phase":"[A-Za-z]*"' | paste - - || true
	curl -s "http://127.0.0.1:$port/metrics" | grep -E '^kubelet_running_(pods|containers)|^kubelet_pod_start_duration_seconds_(count|sum)' || true
	echo "== node API: /containerLogs/default/frontend-demo-node/app (last 3 lines)"
	curl -s "http://127.0.0.1:$port/containerLogs/default/frontend-demo-node/app?tailLines=3"; echo
fi
if [ -n "$cluster" ]; then
	echo "== kubectl get nodes,pods -o wide"
	"${kubectl[@]}" get nodes,pods -o wide
	echo "== the node API through the API server (TLS, its client certificate, SubjectAccessReview)"
	"${kubectl[@]}" get --raw "/api/v1/nodes/$node/proxy/healthz"; echo
	echo "== kubectl logs frontend-$node -c app --tail=3"
	"${kubectl[@]}" logs "frontend-$node" -c app --tail=3 || true
	echo "== the node API refuses a request without credentials"
	{ command -v curl >/dev/null && curl -sk "https://$node_ip:${KUBELET_PORT:-10250}/pods"; echo; } || true
	echo "== kubectl get lease -n kube-node-lease"
	"${kubectl[@]}" get lease -n kube-node-lease
fi
echo "== SIGTERM: the kubelet stops, the pods keep running"
kill -TERM "$kubelet_pid"
wait "$kubelet_pid" || true
kubelet_pid=""
"$CTR" --address "$CONTAINERD_SOCKET" -n k8s.io tasks ls | grep -c RUNNING | sed 's/^/running tasks after the kubelet stopped: /'
