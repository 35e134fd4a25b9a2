# shellcheck shell=bash
# lib.sh: helpers shared by the test bed scripts (sourced, not run).
#
# Everything the test bed installs lives under $TESTBED_HOME (default
# /opt/kubelet-testbed):
#   env                      KEY=VALUE lines written by install.sh (which
#                            containerd to use, where the images are)
#   containerd-1.7/bin/      containerd, containerd-shim-runc-v2, ctr taken
#                            from Debian 13's containerd .deb (if it could be had)
#   images/{pause,busybox}.tar   OCI layouts made by build-images.sh
#   k8s-v1.35.4/bin/         kube-apiserver, kube-controller-manager,
#                            kube-scheduler, kubectl, kubelet and etcd, built
#                            by build-controlplane.sh
#   go/                      Go module and build caches of that build
# One containerd instance lives wholly under the DIR given to start.sh/stop.sh,
# except its bridge interface and a subnet claim under $TESTBED_RUN.

TESTBED_HOME="${TESTBED_HOME:-/opt/kubelet-testbed}"
TESTBED_ENV_FILE="$TESTBED_HOME/env"
# Claims of 10.88.N.0/24 subnets by running instances (one folder per N).
TESTBED_RUN="${TESTBED_RUN:-/run/kubelet-testbed}"
# The control plane of controlplane-start.sh (built by build-controlplane.sh).
TESTBED_K8S_VERSION=1.35.4
TESTBED_ETCD_VERSION=3.6.16
TESTBED_K8S_BIN_DIR="$TESTBED_HOME/k8s-v$TESTBED_K8S_VERSION/bin"
# Bookworm's runc: trixie's needs glibc 2.38.
TESTBED_RUNC_BINARY=/usr/sbin/runc

log() {
	echo "testbed: $*" >&2
}

die() {
	echo "testbed: error: $*" >&2
	exit 1
}

require_root() {
	[ "$(id -u)" -eq 0 ] || die "must run as root"
}

# Prints "URI SIGNED_BY" for the system's main Debian archive: the first apt
# source whose suite is this release's codename (e.g. bookworm, not
# bookworm-security). SIGNED_BY is "-" when the entry names no key file.
system_debian_source() {
	local codename="$1"
	{
		# deb822 files: one stanza per source.
		for f in /etc/apt/sources.list.d/*.sources; do
			[ -r "$f" ] || continue
			awk -v want="$codename" '
				BEGIN { RS = ""; FS = "\n" }
				{
					types = ""; uris = ""; suites = ""; key = "-"; enabled = "yes"
					for (i = 1; i <= NF; i++) {
						line = $i
						if (line ~ /^#/) continue
						split(line, kv, ":")
						name = tolower(kv[1])
						value = substr(line, length(kv[1]) + 2)
						gsub(/^[ \t]+|[ \t]+$/, "", value)
						if (name == "types") types = value
						else if (name == "uris") uris = value
						else if (name == "suites") suites = value
						else if (name == "signed-by" && value ~ /^\//) key = value
						else if (name == "enabled") enabled = tolower(value)
					}
					if (enabled == "no" || (" " types " ") !~ / deb /) next
					if ((" " suites " ") !~ (" " want " ")) next
					split(uris, u, " ")
					print u[1], key
				}' "$f"
		done
		# One-line format: deb [options] URI SUITE COMPONENT...
		for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
			[ -r "$f" ] || continue
			awk -v want="$codename" '
				$1 != "deb" { next }
				{
					key = "-"; i = 2
					if ($2 ~ /^\[/) {
						for (; i <= NF; i++) {
							if ($i ~ /^\[?signed-by=/) { key = $i; sub(/^\[?signed-by=/, "", key); sub(/\]$/, "", key) }
							if ($i ~ /\]$/) { i++; break }
						}
					}
					if ($(i + 1) == want) print $i, (key ~ /^\// ? key : "-")
				}' "$f"
		done
	} | sed -n 1p
}

# Reads $TESTBED_ENV_FILE (written by install.sh) into the environment.
# Sets TESTBED_CONTAINERD_BIN_DIR, TESTBED_CONTAINERD_VERSION, TESTBED_RUNC,
# TESTBED_CNI_BIN_DIR, TESTBED_IMAGES_DIR.
load_env() {
	[ -r "$TESTBED_ENV_FILE" ] || die "$TESTBED_ENV_FILE is missing: run scripts/testbed/install.sh first"
	# shellcheck disable=SC1090
	. "$TESTBED_ENV_FILE"
	[ -x "${TESTBED_CONTAINERD_BIN_DIR:-}/containerd" ] ||
		die "no containerd in '${TESTBED_CONTAINERD_BIN_DIR:-}' (from $TESTBED_ENV_FILE): run install.sh again"
}

# The ctr to use: the chosen one if install.sh ran, else whatever is on PATH.
ctr_binary() {
	if [ -r "$TESTBED_ENV_FILE" ]; then
		# shellcheck disable=SC1090
		(. "$TESTBED_ENV_FILE" && echo "$TESTBED_CONTAINERD_BIN_DIR/ctr")
	else
		command -v ctr || echo /usr/bin/ctr
	fi
}

# Absolute, normalized form of an instance folder (need not exist).
instance_dir() {
	local dir="$1"
	[ -n "$dir" ] || die "usage: $(basename "$0") DIR"
	dir="$(realpath -m -- "$dir")"
	[ "$dir" != "/" ] || die "refusing to use / as an instance folder"
	echo "$dir"
}

# A short stable hash of the instance folder.
dir_hash() {
	printf '%s' "$1" | sha256sum | cut -c1-10
}

# Linux interface names are at most 15 characters: "ktb" + 10 hex digits.
bridge_name() {
	echo "ktb$(dir_hash "$1")"
}

# Pids of containerd shims whose command line names this instance's socket.
shim_pids() {
	local sock="$1/containerd.sock" proc pid cmdline
	for proc in /proc/[0-9]*; do
		pid="${proc#/proc/}"
		cmdline="$(tr '\0' '\n' 2>/dev/null <"$proc/cmdline")" || continue
		case "$(echo "$cmdline" | sed -n 1p)" in
		*containerd-shim*) ;;
		*) continue ;;
		esac
		if echo "$cmdline" | grep -xF -- "$sock" >/dev/null; then
			echo "$pid"
		fi
	done
}

# True if $pid is a containerd started with this instance's config file.
is_instance_containerd() {
	local pid="$1" dir="$2"
	[ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
	tr '\0' '\n' 2>/dev/null <"/proc/$pid/cmdline" | grep -xF -- "$dir/config.toml" >/dev/null
}

# Mount points at or under $1, deepest first (read from /proc/self/mountinfo).
mounts_under() {
	local dir="$1" mp
	awk '{ print $5 }' /proc/self/mountinfo | while read -r mp; do
		mp="$(printf '%b' "$mp")" # mountinfo writes a space as \040
		case "$mp" in
		"$dir" | "$dir"/*) echo "$mp" ;;
		esac
	done | sort -ru
}

# Unmounts everything at or under $1; lazily if a plain umount fails.
unmount_all_under() {
	local dir="$1" mp tries=0
	while [ -n "$(mounts_under "$dir")" ]; do
		tries=$((tries + 1))
		if [ "$tries" -gt 10 ]; then
			log "warning: could not unmount: $(mounts_under "$dir" | tr '\n' ' ')"
			return 1
		fi
		for mp in $(mounts_under "$dir"); do
			umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || true
		done
	done
}

# Subnet claims: $TESTBED_RUN/subnets/N/owner holds the instance folder that
# uses 10.88.N.0/24. mkdir makes the claim atomic between concurrent starts.
claim_subnet() {
	local dir="$1" start n i owner
	mkdir -p "$TESTBED_RUN/subnets"
	start=$(( (0x$(dir_hash "$dir" | cut -c1-4) % 254) + 1 ))
	for i in $(seq 0 253); do
		n=$(( ((start - 1 + i) % 254) + 1 ))
		owner="$(cat "$TESTBED_RUN/subnets/$n/owner" 2>/dev/null || true)"
		if [ "$owner" = "$dir" ]; then
			echo "$n"
			return 0
		fi
		# A claim whose instance folder is gone is stale.
		if [ -n "$owner" ] && [ ! -d "$owner" ]; then
			rm -rf "$TESTBED_RUN/subnets/$n"
		fi
		# Something else on this machine already routes it: skip.
		if [ -n "$(ip -4 route show "10.88.$n.0/24" 2>/dev/null)" ]; then
			continue
		fi
		if mkdir "$TESTBED_RUN/subnets/$n" 2>/dev/null; then
			echo "$dir" >"$TESTBED_RUN/subnets/$n/owner"
			echo "$n"
			return 0
		fi
	done
	return 1
}

release_subnet() {
	local dir="$1" claim
	for claim in "$TESTBED_RUN"/subnets/*/owner; do
		[ -e "$claim" ] || continue
		if [ "$(cat "$claim" 2>/dev/null)" = "$dir" ]; then
			rm -rf "$(dirname "$claim")"
		fi
	done
}

# Stops everything an instance runs or mounts, but keeps its files:
# tasks (through ctr if containerd answers), containerd, shims, containers
# left behind (through runc), mounts, bridge, subnet claim.
teardown_instance() {
	local dir="$1"
	local sock="$dir/containerd.sock"
	local ctr pid ns id sock_file

	ctr="$(ctr_binary)"
	if [ -S "$sock" ] && timeout 5 "$ctr" --address "$sock" version >/dev/null 2>&1; then
		for ns in $(timeout 5 "$ctr" --address "$sock" namespaces ls -q 2>/dev/null); do
			for id in $(timeout 5 "$ctr" --address "$sock" -n "$ns" tasks ls -q 2>/dev/null); do
				timeout 5 "$ctr" --address "$sock" -n "$ns" tasks kill --all -s SIGKILL "$id" >/dev/null 2>&1 || true
			done
			for id in $(timeout 5 "$ctr" --address "$sock" -n "$ns" tasks ls -q 2>/dev/null); do
				timeout 10 "$ctr" --address "$sock" -n "$ns" tasks delete --force "$id" >/dev/null 2>&1 || true
			done
			for id in $(timeout 5 "$ctr" --address "$sock" -n "$ns" containers ls -q 2>/dev/null); do
				timeout 10 "$ctr" --address "$sock" -n "$ns" containers delete "$id" >/dev/null 2>&1 || true
			done
		done
	fi

	pid="$(cat "$dir/containerd.pid" 2>/dev/null || true)"
	if is_instance_containerd "$pid" "$dir"; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 1 50); do
			is_instance_containerd "$pid" "$dir" || break
			sleep 0.2
		done
		if is_instance_containerd "$pid" "$dir"; then
			log "containerd (pid $pid) ignored SIGTERM: sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			sleep 0.2
		fi
	fi
	rm -f "$dir/containerd.pid"

	for pid in $(shim_pids "$dir"); do
		kill -KILL "$pid" 2>/dev/null || true
	done

	# A killed shim leaves its socket (under /run/containerd/s/); the task's
	# bundle folder says which one it was.
	local address
	for address in "$dir"/state/io.containerd.runtime.v2.task/*/*/address; do
		[ -r "$address" ] || continue
		sock_file="$(sed 's|^unix://||' "$address")"
		case "$sock_file" in
		/run/containerd/s/*) rm -f "$sock_file" ;;
		esac
	done

	# Containers whose shim is gone keep running: runc knows them under the
	# instance's own runc root (the runtime's Root option in config.toml).
	if [ -d "$dir/runc" ]; then
		local state
		for state in "$dir"/runc/*/*/; do
			[ -d "$state" ] || continue
			id="$(basename "$state")"
			ns="$(dirname "$state")"
			"$TESTBED_RUNC_BINARY" --root "$ns" delete --force "$id" >/dev/null 2>&1 || true
		done
	fi

	unmount_all_under "$dir" || true

	local bridge
	bridge="$(bridge_name "$dir")"
	if ip link show "$bridge" >/dev/null 2>&1; then
		ip link delete "$bridge" || log "warning: could not delete bridge $bridge"
	fi
	release_subnet "$dir"
}
