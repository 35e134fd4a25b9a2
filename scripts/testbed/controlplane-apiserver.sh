#!/usr/bin/env bash
# controlplane-apiserver.sh DIR stop|start: stops or starts again the
# kube-apiserver of the control plane under DIR (for tests of what a kubelet
# does while the API server is away). `stop` kills it by its pid (TERM, then
# KILL after 3 s); `start` runs it again with the same arguments
# (DIR/kube-apiserver.args), same port and same etcd, waits for /readyz and
# records the new pid in DIR/kube-apiserver.pid and DIR/controlplane.env.
# Both are no-ops when it is already stopped or running.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
. "$SCRIPT_DIR/lib.sh"
# shellcheck source=controlplane-lib.sh
. "$SCRIPT_DIR/controlplane-lib.sh"

READY_TIMEOUT_SECONDS="${CONTROLPLANE_READY_TIMEOUT_SECONDS:-180}"

main() {
	local dir pid
	[ "$#" -eq 2 ] || die "usage: $(basename "$0") DIR stop|start"
	dir="$(instance_dir "$1")"
	load_controlplane_env "$dir"
	pid="$(cat "$dir/kube-apiserver.pid" 2>/dev/null || true)"
	case "$2" in
	stop)
		stop_daemon "$dir" kube-apiserver
		set_env_value "$dir/controlplane.env" APISERVER_PID ""
		log "kube-apiserver of $dir stopped"
		;;
	start)
		if is_controlplane_process "$pid" "$dir"; then
			log "kube-apiserver of $dir already runs (pid $pid)"
			return 0
		fi
		start_daemon "$dir" kube-apiserver
		wait_apiserver_ready "$dir" "$READY_TIMEOUT_SECONDS"
		set_env_value "$dir/controlplane.env" APISERVER_PID "$(cat "$dir/kube-apiserver.pid")"
		log "kube-apiserver of $dir ready again at $SERVER"
		;;
	*) die "usage: $(basename "$0") DIR stop|start" ;;
	esac
}

main "$@"
