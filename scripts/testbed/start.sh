#!/usr/bin/env bash
# start.sh DIR: starts a containerd of its own under DIR, for tests; several
# instances (different DIRs) can run side by side. Stop it with stop.sh DIR.
#
# What it makes under DIR:
#   config.toml      containerd config (version 2): root=DIR/root,
#                    state=DIR/state, socket DIR/containerd.sock (+ .ttrpc),
#                    no TCP port (CRI stream server on 127.0.0.1 port 0,
#                    no metrics or debug listener)
#   net.d/           a bridge CNI network of its own: bridge ktb<hash of DIR>,
#                    subnet 10.88.N.0/24 (N unique among running instances),
#                    no masquerading and no default route: pod traffic stays
#                    on this machine
#   containerd.log, containerd.pid, testbed.env (address, version, bridge,
#   subnet, runc root; KEY=VALUE lines)
#   runc/            runc's state for CRI containers (the runtime's Root), so
#                    instances never share /run/containerd/runc; give
#                    `ctr run` the same with --runc-root DIR/runc
# Then imports localhost/pause:3.10 (the sandbox image) and
# localhost/busybox:latest into the k8s.io namespace and prints
#   testbed: containerd vX.Y.Z at unix://DIR/containerd.sock
# TESTBED_EXTRA_IMAGES=FILE also imports the tarballs FILE lists, one
# "TARBALL BASE_NAME" a line (build-conformance.sh writes such a list of the
# e2e tests' images; each image is named BASE_NAME:<its layout's ref names>).
#
# Facts it relies on (see install.sh, which sets them up):
#   - the containerd chosen by install.sh ($TESTBED_HOME/env); its folder is
#     first on PATH so its containerd-shim-runc-v2 is used, while runc is
#     always bookworm's /usr/sbin/runc (BinaryName), with cgroupfs (no systemd)
#   - restrict_oom_score_adj = true: this machine lacks CAP_SYS_RESOURCE, so
#     every sandbox fails without it
#   - CNI plugins in /usr/lib/cni; the CRI plugin adds the loopback plugin
#     (/usr/lib/cni/loopback) to every sandbox by itself
#   - no registry can be reached: the images come from install.sh's tarballs
# On any failure it stops what it started (keeping DIR's files and log) and
# exits non-zero.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
. "$SCRIPT_DIR/lib.sh"

START_TIMEOUT_SECONDS=20

# Fails if an instance already runs under DIR.
check_not_running() {
	local pid
	pid="$(cat "$DIR/containerd.pid" 2>/dev/null || true)"
	if is_instance_containerd "$pid" "$DIR"; then
		die "a containerd for $DIR is already running (pid $pid): run stop.sh $DIR first"
	fi
	if [ -S "$SOCK" ] && timeout 5 "$CTR" --address "$SOCK" version >/dev/null 2>&1; then
		die "something already answers on $SOCK: run stop.sh $DIR first"
	fi
}

supports_netns_under_state_dir() {
	"$BIN_DIR/containerd" config default 2>/dev/null | grep netns_mounts_under_state_dir >/dev/null
}

write_config() {
	local netns_line=""
	if supports_netns_under_state_dir; then
		netns_line="netns_mounts_under_state_dir = true"
	fi
	cat >"$DIR/config.toml" <<EOF
# Written by scripts/testbed/start.sh for a test instance; see that script.
version = 2
root = "$DIR/root"
state = "$DIR/state"
oom_score = 0

[grpc]
  address = "$SOCK"

[ttrpc]
  address = "$SOCK.ttrpc"

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$DIR/opt"

  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "localhost/pause:3.10"
    restrict_oom_score_adj = true
    disable_tcp_service = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_selinux = false
    $netns_line

    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"

        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          BinaryName = "$RUNC"
          Root = "$DIR/runc"
          SystemdCgroup = false

    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "$CNI_BIN_DIR"
      conf_dir = "$DIR/net.d"
      max_conf_num = 1

    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = ""

  # containerd 1.7's NRI would listen on /var/run/nri/nri.sock, shared by
  # every instance: keep it off (1.6 has no such plugin and ignores this).
  [plugins."io.containerd.nri.v1.nri"]
    disable = true
EOF
}

# The pod network: a bridge of this instance's own, host-local addresses in
# 10.88.N.0/24, the bridge as the pods' gateway on that subnet only (no
# default route in the pod, no masquerading): nothing can leave the machine.
write_cni_config() {
	mkdir -p "$DIR/net.d" "$DIR/cni-ipam"
	cat >"$DIR/net.d/10-testbed-bridge.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "testbed-$(dir_hash "$DIR")",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "isDefaultGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "$SUBNET" }]],
        "dataDir": "$DIR/cni-ipam"
      }
    }
  ]
}
EOF
}

# Closes every file descriptor above 2 of the current (sub)shell, so that a
# daemon started from it keeps no pipe of whoever ran start.sh open.
close_inherited_fds() {
	local fd_path fd
	for fd_path in /proc/"$BASHPID"/fd/*; do
		fd="${fd_path##*/}"
		if [ "$fd" -gt 2 ]; then
			eval "exec $fd>&-" 2>/dev/null || true
		fi
	done
}

start_containerd() {
	# In its own session, with only /dev/null and its log as open files.
	# containerd finds its shim on PATH: the chosen one first. runc is named
	# by absolute path in config.toml.
	(
		close_inherited_fds
		PATH="$BIN_DIR:/usr/sbin:/usr/bin:/sbin:/bin" \
			exec setsid "$BIN_DIR/containerd" --config "$DIR/config.toml" \
			</dev/null >>"$DIR/containerd.log" 2>&1
	) &
	STARTED_PID=$!
	echo "$STARTED_PID" >"$DIR/containerd.pid"
}

cri_plugin_ok() {
	"$CTR" --address "$SOCK" plugins ls 2>/dev/null |
		awk '$1 == "io.containerd.grpc.v1" && $2 == "cri" { print $NF }' | grep -x ok >/dev/null
}

wait_until_ready() {
	local deadline=$((SECONDS + START_TIMEOUT_SECONDS))
	while [ "$SECONDS" -lt "$deadline" ]; do
		kill -0 "$STARTED_PID" 2>/dev/null || die "containerd exited during startup"
		if [ -S "$SOCK" ] && timeout 5 "$CTR" --address "$SOCK" version >/dev/null 2>&1; then
			cri_plugin_ok || die "containerd runs but its CRI plugin did not load"
			return 0
		fi
		sleep 0.2
	done
	die "containerd did not answer on $SOCK within ${START_TIMEOUT_SECONDS}s"
}

# import_image TARBALL NAME EXPECTED_REF
import_image() {
	local tarball="$1" name="$2" expected="$3"
	[ -r "$tarball" ] || die "$tarball is missing: run install.sh (or build-images.sh)"
	"$CTR" --address "$SOCK" -n k8s.io images import --base-name "$name" "$tarball" >/dev/null ||
		die "could not import $tarball"
	"$CTR" --address "$SOCK" -n k8s.io images ls -q | grep -xF "$expected" >/dev/null ||
		die "importing $tarball did not give $expected (got: $("$CTR" --address "$SOCK" -n k8s.io images ls -q | tr '\n' ' '))"
}

# Imports every "TARBALL BASE_NAME" line of $TESTBED_EXTRA_IMAGES.
import_extra_images() {
	local list="$1" tarball name
	[ -r "$list" ] || die "TESTBED_EXTRA_IMAGES=$list cannot be read"
	while read -r tarball name; do
		[ -n "$tarball" ] || continue
		[ -r "$tarball" ] || die "$tarball (listed in $list) is missing"
		"$CTR" --address "$SOCK" -n k8s.io images import --base-name "$name" "$tarball" >/dev/null ||
			die "could not import $tarball"
		"$CTR" --address "$SOCK" -n k8s.io images ls -q | grep "^$name:" >/dev/null ||
			die "importing $tarball gave no $name:* image"
	done <"$list"
}

server_version() {
	"$CTR" --address "$SOCK" version | awk '/^Server:/ { s = 1 } s && $1 == "Version:" { print $2; exit }' |
		sed -e 's/^v//' -e 's/[~+-].*//'
}

write_instance_env() {
	cat >"$DIR/testbed.env" <<EOF
CONTAINERD_ADDRESS=unix://$SOCK
CONTAINERD_SOCKET=$SOCK
CONTAINERD_VERSION=$VERSION
CONTAINERD_PID=$STARTED_PID
CTR=$CTR
RUNC_ROOT=$DIR/runc
BRIDGE=$BRIDGE
SUBNET=$SUBNET
EOF
}

# On failure: show the log, stop what this run started, keep the files.
on_exit() {
	local rc=$?
	if [ "$rc" -ne 0 ] && [ -n "$STARTED" ]; then
		if [ -s "$DIR/containerd.log" ]; then
			log "last lines of $DIR/containerd.log:"
			tail -n 15 "$DIR/containerd.log" | cut -c1-300 >&2
		fi
		log "start failed: stopping what it started (files kept in $DIR; stop.sh $DIR removes them)"
		teardown_instance "$DIR" || true
	fi
	exit "$rc"
}

main() {
	local n image
	require_root
	[ "$#" -eq 1 ] || die "usage: $(basename "$0") DIR"
	DIR="$(instance_dir "$1")"
	SOCK="$DIR/containerd.sock"
	# A unix socket path has at most 107 bytes; the .ttrpc one is the longest.
	[ "${#SOCK}" -le 100 ] || die "DIR is too long for a unix socket path: $DIR"
	load_env
	BIN_DIR="$TESTBED_CONTAINERD_BIN_DIR"
	CTR="$BIN_DIR/ctr"
	RUNC="${TESTBED_RUNC:-$TESTBED_RUNC_BINARY}"
	CNI_BIN_DIR="$TESTBED_CNI_BIN_DIR"
	BRIDGE="$(bridge_name "$DIR")"
	for image in pause busybox; do
		[ -r "$TESTBED_IMAGES_DIR/$image.tar" ] ||
			die "$TESTBED_IMAGES_DIR/$image.tar is missing: run install.sh (or build-images.sh)"
	done
	STARTED=""
	STARTED_PID=""

	# DIR must be new, empty, or one of ours: stop.sh deletes it.
	if [ -d "$DIR" ] && [ ! -e "$DIR/.kubelet-testbed" ] && [ -n "$(ls -A "$DIR")" ]; then
		die "$DIR is not empty and was not made by start.sh: give a new or empty folder"
	fi
	mkdir -p "$DIR"
	touch "$DIR/.kubelet-testbed" # marks DIR as ours, for stop.sh
	# One start.sh at a time per DIR.
	exec 9>"$DIR/.start.lock"
	flock -n 9 || die "another start.sh is running for $DIR"
	check_not_running

	# From here on, a failure undoes what was started.
	STARTED=yes
	trap on_exit EXIT
	n="$(claim_subnet "$DIR")" || die "no free 10.88.N.0/24 subnet left"
	SUBNET="10.88.$n.0/24"
	write_config
	write_cni_config
	start_containerd
	wait_until_ready
	import_image "$TESTBED_IMAGES_DIR/pause.tar" localhost/pause localhost/pause:3.10
	import_image "$TESTBED_IMAGES_DIR/busybox.tar" localhost/busybox localhost/busybox:latest
	if [ -n "${TESTBED_EXTRA_IMAGES:-}" ]; then
		import_extra_images "$TESTBED_EXTRA_IMAGES"
	fi
	VERSION="$(server_version)"
	write_instance_env
	STARTED=""
	echo "testbed: containerd v$VERSION at unix://$SOCK"
}

main "$@"
