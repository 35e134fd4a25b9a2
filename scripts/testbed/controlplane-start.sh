#!/usr/bin/env bash
# controlplane-start.sh DIR NODE_NAME: starts a Kubernetes v1.35.4 control
# plane of its own under DIR, on loopback, for end-to-end tests: etcd,
# kube-apiserver, kube-controller-manager and kube-scheduler (built by
# build-controlplane.sh). Several instances (different DIRs) run side by
# side. Stop it with controlplane-stop.sh DIR.
#
# What it makes under DIR:
#   pki/               openssl certificates (EC P-256 keys): ca, apiserver
#                      (serving: IP:127.0.0.1, IP:10.0.0.1, DNS:kubernetes,
#                      kubernetes.default, kubernetes.default.svc[.cluster.local],
#                      localhost), admin (O=system:masters), node
#                      (CN=system:node:NODE_NAME, O=system:nodes),
#                      apiserver-kubelet-client (the API server's calls to
#                      kubelets; bound to system:kubelet-api-admin),
#                      controller-manager (CN=system:kube-controller-manager),
#                      scheduler (CN=system:kube-scheduler); sa.key/sa.pub, the
#                      RSA service-account key
#   admin.kubeconfig, node.kubeconfig, controller-manager.kubeconfig,
#   scheduler.kubeconfig   (server https://127.0.0.1:PORT, certificates embedded)
#   etcd/              etcd's data
#   NAME.args, NAME.pid    each daemon's arguments (one a line) and pid
#   logs/NAME.log      each daemon's output
#   controlplane.env   KEY=VALUE lines: ports, pids, paths, KUBECTL, SERVER
# and prints
#   testbed: control plane v1.35.4 at https://127.0.0.1:PORT
#
# Ports: a block of five loopback ports, 29000 + 10*N + 0..4 (etcd client,
# etcd peer, kube-apiserver, kube-controller-manager, kube-scheduler), N
# unique among running instances (claimed under
# $TESTBED_RUN/controlplane-ports) and every port checked free.
# etcd speaks plain HTTP on 127.0.0.1 (a test fixture: any local user could
# reach it) with --unsafe-no-fsync.
#
# kube-controller-manager runs every default controller (--controllers=*,
# node lifecycle included, default grace periods) with its own service
# account per controller, and signs CSRs with the CA (so a kubelet's
# serving-certificate CSR can be approved). Leader election is off for it and
# the scheduler, so they survive an API server restart.
#
# It waits for /readyz, creates the ClusterRoleBinding of the API server's
# kubelet client to system:kubelet-api-admin, and waits for the `default`
# ServiceAccount in namespace default (the controller manager made it) and
# the scheduler's /healthz. On any failure it stops what it started (keeping
# DIR's files and logs) and exits non-zero. Root is not needed.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
. "$SCRIPT_DIR/lib.sh"
# shellcheck source=controlplane-lib.sh
. "$SCRIPT_DIR/controlplane-lib.sh"

READY_TIMEOUT_SECONDS="${CONTROLPLANE_READY_TIMEOUT_SECONDS:-180}"
SERVICE_CLUSTER_IP_RANGE=10.0.0.0/24
CERT_DAYS=30

# new_key NAME: an EC P-256 key in pki/NAME.key.
new_key() {
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/$1.key" 2>/dev/null
	chmod 600 "$PKI/$1.key"
}

# sign NAME SUBJECT EXTENSIONS: pki/NAME.crt for pki/NAME.key, signed by the CA.
sign() {
	local name="$1" subject="$2" ext="$3"
	new_key "$name"
	openssl req -new -key "$PKI/$name.key" -subj "$subject" -out "$PKI/$name.csr" 2>/dev/null
	printf '%s\n' "$ext" >"$PKI/$name.ext"
	openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
		-CAcreateserial -days "$CERT_DAYS" -sha256 -extfile "$PKI/$name.ext" \
		-out "$PKI/$name.crt" 2>/dev/null || die "openssl could not sign $name"
	rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

client_cert() {
	sign "$1" "$2" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
}

write_certificates() {
	PKI="$DIR/pki"
	mkdir -p "$PKI"
	chmod 700 "$PKI"
	new_key ca
	openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=kubelet-testbed-ca" -days "$CERT_DAYS" -sha256 \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
		-out "$PKI/ca.crt" 2>/dev/null || die "openssl could not make the CA"
	sign apiserver "/CN=kube-apiserver" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost"
	client_cert admin "/O=system:masters/CN=kubernetes-admin"
	client_cert node "/O=system:nodes/CN=system:node:$NODE_NAME"
	client_cert apiserver-kubelet-client "/CN=$KUBELET_CLIENT_USER"
	client_cert controller-manager "/CN=system:kube-controller-manager"
	client_cert scheduler "/CN=system:kube-scheduler"
	# The service-account key: RSA, one file signs and verifies.
	openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>/dev/null
	chmod 600 "$PKI/sa.key"
	openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
}

# write_kubeconfig FILE USER CERT_NAME
write_kubeconfig() {
	local file="$1" user="$2" name="$3"
	cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kubelet-testbed
  cluster:
    server: $SERVER
    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$PKI/$name.crt")
    client-key-data: $(base64 -w0 <"$PKI/$name.key")
contexts:
- name: $user@kubelet-testbed
  context:
    cluster: kubelet-testbed
    user: $user
current-context: $user@kubelet-testbed
EOF
	chmod 600 "$file"
}

# args_file NAME ARG...: DIR/NAME.args, one argument a line.
args_file() {
	local name="$1"
	shift
	printf '%s\n' "$@" >"$DIR/$name.args"
}

write_args() {
	args_file etcd \
		--name=default \
		--data-dir="$DIR/etcd" \
		--listen-client-urls="http://127.0.0.1:$ETCD_PORT" \
		--advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
		--listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
		--initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
		--initial-cluster="default=http://127.0.0.1:$ETCD_PEER_PORT" \
		--initial-cluster-state=new \
		--unsafe-no-fsync=true \
		--log-level=warn
	args_file kube-apiserver \
		--etcd-servers="http://127.0.0.1:$ETCD_PORT" \
		--bind-address=127.0.0.1 \
		--advertise-address=127.0.0.1 \
		--secure-port="$APISERVER_PORT" \
		--tls-cert-file="$PKI/apiserver.crt" \
		--tls-private-key-file="$PKI/apiserver.key" \
		--client-ca-file="$PKI/ca.crt" \
		--authorization-mode=Node,RBAC \
		--enable-admission-plugins=NodeRestriction \
		--allow-privileged=true \
		--service-cluster-ip-range="$SERVICE_CLUSTER_IP_RANGE" \
		--service-account-issuer=https://kubernetes.default.svc.cluster.local \
		--service-account-key-file="$PKI/sa.pub" \
		--service-account-signing-key-file="$PKI/sa.key" \
		--kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
		--kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
		--kubelet-certificate-authority="$PKI/ca.crt" \
		--kubelet-preferred-address-types=InternalIP,Hostname,InternalDNS,ExternalDNS,ExternalIP \
		--cert-dir="$DIR/apiserver-certs" \
		--v=1
	args_file kube-controller-manager \
		--kubeconfig="$DIR/controller-manager.kubeconfig" \
		--authentication-kubeconfig="$DIR/controller-manager.kubeconfig" \
		--authorization-kubeconfig="$DIR/controller-manager.kubeconfig" \
		--bind-address=127.0.0.1 \
		--secure-port="$CONTROLLER_MANAGER_PORT" \
		--controllers='*' \
		--use-service-account-credentials=true \
		--service-account-private-key-file="$PKI/sa.key" \
		--root-ca-file="$PKI/ca.crt" \
		--cluster-signing-cert-file="$PKI/ca.crt" \
		--cluster-signing-key-file="$PKI/ca.key" \
		--service-cluster-ip-range="$SERVICE_CLUSTER_IP_RANGE" \
		--leader-elect=false \
		--v=1
	args_file kube-scheduler \
		--kubeconfig="$DIR/scheduler.kubeconfig" \
		--authentication-kubeconfig="$DIR/scheduler.kubeconfig" \
		--authorization-kubeconfig="$DIR/scheduler.kubeconfig" \
		--bind-address=127.0.0.1 \
		--secure-port="$SCHEDULER_PORT" \
		--leader-elect=false \
		--v=1
}

write_env() {
	cat >"$DIR/controlplane.env" <<EOF
CONTROLPLANE_DIR=$DIR
NODE_NAME=$NODE_NAME
K8S_VERSION=v$TESTBED_K8S_VERSION
ETCD_VERSION=v$TESTBED_ETCD_VERSION
BIN_DIR=$TESTBED_K8S_BIN_DIR
KUBECTL=$TESTBED_K8S_BIN_DIR/kubectl
KUBELET=$TESTBED_K8S_BIN_DIR/kubelet
SERVER=$SERVER
ADMIN_KUBECONFIG=$DIR/admin.kubeconfig
NODE_KUBECONFIG=$DIR/node.kubeconfig
PKI_DIR=$PKI
CA_CERT=$PKI/ca.crt
CA_KEY=$PKI/ca.key
SERVICE_CLUSTER_IP_RANGE=$SERVICE_CLUSTER_IP_RANGE
KUBELET_CLIENT_USER=$KUBELET_CLIENT_USER
LOG_DIR=$DIR/logs
PORT_SLOT=$SLOT
ETCD_PORT=$ETCD_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
APISERVER_PORT=$APISERVER_PORT
CONTROLLER_MANAGER_PORT=$CONTROLLER_MANAGER_PORT
SCHEDULER_PORT=$SCHEDULER_PORT
ETCD_PID=$(cat "$DIR/etcd.pid")
APISERVER_PID=$(cat "$DIR/kube-apiserver.pid")
CONTROLLER_MANAGER_PID=$(cat "$DIR/kube-controller-manager.pid")
SCHEDULER_PID=$(cat "$DIR/kube-scheduler.pid")
EOF
}

wait_etcd() {
	local deadline=$((SECONDS + READY_TIMEOUT_SECONDS)) pid
	pid="$(cat "$DIR/etcd.pid")"
	while [ "$SECONDS" -lt "$deadline" ]; do
		process_alive "$pid" || {
			tail -n 15 "$DIR/logs/etcd.log" | cut -c1-300 >&2
			die "etcd exited during startup"
		}
		# A TCP connect through bash: no curl needed.
		if (exec 3<>"/dev/tcp/127.0.0.1/$ETCD_PORT") 2>/dev/null; then
			return 0
		fi
		sleep 0.2
	done
	die "etcd did not listen on 127.0.0.1:$ETCD_PORT within ${READY_TIMEOUT_SECONDS}s"
}

kubectl_admin() {
	timeout 30 "$TESTBED_K8S_BIN_DIR/kubectl" --kubeconfig "$DIR/admin.kubeconfig" --request-timeout=20s "$@" </dev/null
}

bind_kubelet_client() {
	kubectl_admin create clusterrolebinding kubelet-testbed:kubelet-api-admin \
		--clusterrole=system:kubelet-api-admin --user="$KUBELET_CLIENT_USER" >/dev/null ||
		die "could not bind $KUBELET_CLIENT_USER to system:kubelet-api-admin"
}

# wait_for WHAT DAEMON COMMAND...: until COMMAND succeeds, while DAEMON lives.
wait_until() {
	local what="$1" daemon="$2" deadline=$((SECONDS + READY_TIMEOUT_SECONDS)) pid
	shift 2
	pid="$(cat "$DIR/$daemon.pid")"
	while [ "$SECONDS" -lt "$deadline" ]; do
		process_alive "$pid" || {
			tail -n 15 "$DIR/logs/$daemon.log" | cut -c1-300 >&2
			die "$daemon exited during startup"
		}
		if "$@" >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.5
	done
	die "no $what within ${READY_TIMEOUT_SECONDS}s (see $DIR/logs/$daemon.log)"
}

# /healthz of a component's secure port (self-signed: not verified), as admin.
component_healthy() {
	[ "$(timeout 10 "$TESTBED_K8S_BIN_DIR/kubectl" --kubeconfig /dev/null --server "https://127.0.0.1:$1" \
		--client-certificate "$PKI/admin.crt" --client-key "$PKI/admin.key" \
		--insecure-skip-tls-verify=true --request-timeout=5s get --raw /healthz </dev/null 2>/dev/null)" = ok ]
}

on_exit() {
	local rc=$? daemon
	if [ "$rc" -ne 0 ] && [ -n "$STARTED" ]; then
		log "start failed: stopping what it started (files kept in $DIR; controlplane-stop.sh $DIR removes them)"
		for daemon in kube-scheduler kube-controller-manager kube-apiserver etcd; do
			stop_daemon "$DIR" "$daemon"
		done
		release_port_slot "$DIR"
	fi
	exit "$rc"
}

main() {
	local bin pid base start=$SECONDS
	[ "$#" -eq 2 ] || die "usage: $(basename "$0") DIR NODE_NAME"
	DIR="$(instance_dir "$1")"
	NODE_NAME="$2"
	[[ "$NODE_NAME" =~ ^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$ ]] || die "NODE_NAME '$NODE_NAME' is not a DNS subdomain"
	for bin in "${CONTROLPLANE_DAEMONS[@]}" kubectl; do
		[ -x "$TESTBED_K8S_BIN_DIR/$bin" ] ||
			die "$TESTBED_K8S_BIN_DIR/$bin is missing: run scripts/testbed/build-controlplane.sh (install.sh does)"
	done
	command -v openssl >/dev/null || die "openssl is missing"
	command -v ss >/dev/null || die "ss is missing (Debian package iproute2)"
	KUBELET_CLIENT_USER=kube-apiserver-kubelet-client
	STARTED=""

	# DIR must be new, empty, or one of ours: controlplane-stop.sh deletes it.
	if [ -d "$DIR" ] && [ ! -e "$DIR/$CONTROLPLANE_MARKER" ] && [ -n "$(ls -A "$DIR")" ]; then
		die "$DIR is not empty and was not made by controlplane-start.sh: give a new or empty folder"
	fi
	mkdir -p "$DIR/logs"
	touch "$DIR/$CONTROLPLANE_MARKER"
	exec 9>"$DIR/.start.lock"
	flock -n 9 || die "another controlplane-start.sh is running for $DIR"
	for bin in "${CONTROLPLANE_DAEMONS[@]}"; do
		pid="$(cat "$DIR/$bin.pid" 2>/dev/null || true)"
		! is_controlplane_process "$pid" "$DIR" ||
			die "$bin for $DIR is already running (pid $pid): run controlplane-stop.sh $DIR first"
	done

	STARTED=yes
	trap on_exit EXIT
	SLOT="$(claim_port_slot "$DIR")" || die "no free block of loopback ports left"
	base=$((CONTROLPLANE_PORT_BASE + 10 * SLOT))
	ETCD_PORT=$base
	ETCD_PEER_PORT=$((base + 1))
	APISERVER_PORT=$((base + 2))
	CONTROLLER_MANAGER_PORT=$((base + 3))
	SCHEDULER_PORT=$((base + 4))
	SERVER="https://127.0.0.1:$APISERVER_PORT"

	write_certificates
	write_kubeconfig "$DIR/admin.kubeconfig" kubernetes-admin admin
	write_kubeconfig "$DIR/node.kubeconfig" "system:node:$NODE_NAME" node
	write_kubeconfig "$DIR/controller-manager.kubeconfig" system:kube-controller-manager controller-manager
	write_kubeconfig "$DIR/scheduler.kubeconfig" system:kube-scheduler scheduler
	write_args

	start_daemon "$DIR" etcd
	wait_etcd
	start_daemon "$DIR" kube-apiserver
	wait_apiserver_ready "$DIR" "$READY_TIMEOUT_SECONDS"
	bind_kubelet_client
	start_daemon "$DIR" kube-controller-manager
	start_daemon "$DIR" kube-scheduler
	wait_until "ServiceAccount default/default" kube-controller-manager \
		kubectl_admin get serviceaccount default --namespace default
	wait_until "kube-scheduler /healthz" kube-scheduler component_healthy "$SCHEDULER_PORT"
	wait_until "kube-controller-manager /healthz" kube-controller-manager component_healthy "$CONTROLLER_MANAGER_PORT"
	write_env
	STARTED=""
	log "control plane ready in $((SECONDS - start)) s (logs in $DIR/logs)"
	echo "testbed: control plane v$TESTBED_K8S_VERSION at $SERVER"
}

main "$@"
