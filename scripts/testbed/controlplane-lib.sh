# shellcheck shell=bash
# controlplane-lib.sh: helpers of controlplane-start.sh, controlplane-stop.sh
# and controlplane-apiserver.sh (sourced after lib.sh, not run).
#
# One control plane lives wholly under its DIR (certificates, kubeconfigs,
# etcd's data, logs, pid files), except the claim of its block of loopback
# ports under $TESTBED_RUN/controlplane-ports.

# The four daemons, in start order; DIR/NAME.pid holds each one's pid.
CONTROLPLANE_DAEMONS=(etcd kube-apiserver kube-controller-manager kube-scheduler)
# Port blocks: slot N (1..CONTROLPLANE_SLOTS) owns ports
# CONTROLPLANE_PORT_BASE + 10*N + 0..4, below the kernel's ephemeral range
# (32768-60999 here) so that no outgoing connection takes one of them.
CONTROLPLANE_PORT_BASE=29000
CONTROLPLANE_SLOTS=370
CONTROLPLANE_MARKER=.kubelet-testbed-controlplane

# True if $pid runs one of the control plane's binaries with DIR/ in its
# command line (so a recycled pid is never killed).
is_controlplane_process() {
	local pid="$1" dir="$2" exe
	[ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
	exe="$(readlink "/proc/$pid/exe" 2>/dev/null)" || return 1
	case "$exe" in
	"$TESTBED_K8S_BIN_DIR"/*) ;;
	*) return 1 ;;
	esac
	tr '\0' '\n' 2>/dev/null <"/proc/$pid/cmdline" | grep -F -- "$dir/" >/dev/null
}

# True if process $1 exists and is not a zombie (a daemon that just started
# may still be the shell that is about to exec it).
process_alive() {
	local state
	state="$(sed -e 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)"
	[ -n "$state" ] && [ "$state" != Z ]
}

# Pids of the control plane's binaries whose command line names DIR/, for
# the ones whose pid file was lost.
controlplane_pids() {
	local dir="$1" proc pid
	for proc in /proc/[0-9]*; do
		pid="${proc#/proc/}"
		if is_controlplane_process "$pid" "$dir"; then
			echo "$pid"
		fi
	done
}

# Seconds between SIGTERM and SIGKILL. kube-apiserver often stays after its
# graceful shutdown has stopped listening (seen here: 10 s and more); nothing
# of a test control plane needs a clean exit.
CONTROLPLANE_STOP_GRACE_SECONDS=3

# stop_pid PID DIR NAME: SIGTERM, then SIGKILL after the grace period.
stop_pid() {
	local pid="$1" dir="$2" name="$3"
	is_controlplane_process "$pid" "$dir" || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 1 $((CONTROLPLANE_STOP_GRACE_SECONDS * 5))); do
		is_controlplane_process "$pid" "$dir" || return 0
		sleep 0.2
	done
	log "$name (pid $pid) still there ${CONTROLPLANE_STOP_GRACE_SECONDS} s after SIGTERM: sending SIGKILL"
	kill -KILL "$pid" 2>/dev/null || true
	for _ in $(seq 1 25); do
		is_controlplane_process "$pid" "$dir" || return 0
		sleep 0.2
	done
	log "warning: $name (pid $pid) is still there after SIGKILL"
}

# stop_daemon DIR NAME: stops the daemon whose pid is in DIR/NAME.pid.
stop_daemon() {
	local dir="$1" name="$2" pid
	pid="$(cat "$dir/$name.pid" 2>/dev/null || true)"
	stop_pid "$pid" "$dir" "$name"
	rm -f "$dir/$name.pid"
}

# Closes every file descriptor above 2 of the current (sub)shell, so that a
# daemon started from it keeps no pipe of whoever ran the script open.
close_inherited_fds() {
	local fd_path fd
	for fd_path in /proc/"$BASHPID"/fd/*; do
		fd="${fd_path##*/}"
		if [ "$fd" -gt 2 ]; then
			eval "exec $fd>&-" 2>/dev/null || true
		fi
	done
}

# start_daemon DIR NAME: runs $TESTBED_K8S_BIN_DIR/NAME with the arguments in
# DIR/NAME.args (one a line) in a session of its own, output appended to
# DIR/logs/NAME.log, and writes DIR/NAME.pid.
start_daemon() {
	local dir="$1" name="$2" args=()
	mapfile -t args <"$dir/$name.args"
	(
		close_inherited_fds
		exec setsid "$TESTBED_K8S_BIN_DIR/$name" "${args[@]}" </dev/null >>"$dir/logs/$name.log" 2>&1
	) &
	echo "$!" >"$dir/$name.pid"
}

# True if something on this machine uses TCP port $1 (any state).
port_in_use() {
	[ -n "$(ss -Htan "( sport = :$1 )" 2>/dev/null)" ]
}

# claim_port_slot DIR: prints N, the slot of loopback ports DIR may use.
# $TESTBED_RUN/controlplane-ports/N/owner holds DIR; mkdir makes the claim
# atomic between concurrent starts; a claim whose DIR is gone is stale.
claim_port_slot() {
	local dir="$1" start n i owner p free
	mkdir -p "$TESTBED_RUN/controlplane-ports"
	start=$(((0x$(dir_hash "$dir" | cut -c1-4) % CONTROLPLANE_SLOTS) + 1))
	for i in $(seq 0 $((CONTROLPLANE_SLOTS - 1))); do
		n=$((((start - 1 + i) % CONTROLPLANE_SLOTS) + 1))
		owner="$(cat "$TESTBED_RUN/controlplane-ports/$n/owner" 2>/dev/null || true)"
		if [ "$owner" = "$dir" ]; then
			echo "$n"
			return 0
		fi
		if [ -n "$owner" ] && [ ! -d "$owner" ]; then
			rm -rf "$TESTBED_RUN/controlplane-ports/$n"
		fi
		free=yes
		for p in $(seq $((CONTROLPLANE_PORT_BASE + 10 * n)) $((CONTROLPLANE_PORT_BASE + 10 * n + 4))); do
			if port_in_use "$p"; then
				free=""
				break
			fi
		done
		[ -n "$free" ] || continue
		if mkdir "$TESTBED_RUN/controlplane-ports/$n" 2>/dev/null; then
			echo "$dir" >"$TESTBED_RUN/controlplane-ports/$n/owner"
			echo "$n"
			return 0
		fi
	done
	return 1
}

release_port_slot() {
	local dir="$1" claim
	for claim in "$TESTBED_RUN"/controlplane-ports/*/owner; do
		[ -e "$claim" ] || continue
		if [ "$(cat "$claim" 2>/dev/null)" = "$dir" ]; then
			rm -rf "$(dirname "$claim")"
		fi
	done
}

# Reads DIR/controlplane.env into the environment.
load_controlplane_env() {
	local dir="$1"
	[ -r "$dir/controlplane.env" ] || die "$dir/controlplane.env is missing: is a control plane running there?"
	# shellcheck disable=SC1091
	. "$dir/controlplane.env"
}

# set_env_value FILE KEY VALUE: rewrites KEY=... in FILE.
set_env_value() {
	local file="$1" key="$2" value="$3"
	sed -i -e "s|^$key=.*|$key=$value|" "$file"
}

# wait_apiserver_ready DIR SECONDS: until `kubectl get --raw /readyz` says ok.
wait_apiserver_ready() {
	local dir="$1" limit="$2" deadline pid
	deadline=$((SECONDS + limit))
	pid="$(cat "$dir/kube-apiserver.pid" 2>/dev/null || true)"
	while [ "$SECONDS" -lt "$deadline" ]; do
		process_alive "$pid" || {
			log "last lines of $dir/logs/kube-apiserver.log:"
			tail -n 15 "$dir/logs/kube-apiserver.log" | cut -c1-300 >&2
			die "kube-apiserver exited during startup"
		}
		if [ "$(timeout 10 "$TESTBED_K8S_BIN_DIR/kubectl" --kubeconfig "$dir/admin.kubeconfig" \
			--request-timeout=5s get --raw /readyz </dev/null 2>/dev/null)" = "ok" ]; then
			return 0
		fi
		sleep 0.5
	done
	die "kube-apiserver did not report /readyz ok within ${limit}s (see $dir/logs/kube-apiserver.log)"
}
