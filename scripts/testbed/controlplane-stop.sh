#!/usr/bin/env bash
# controlplane-stop.sh DIR: stops the control plane that controlplane-start.sh
# started under DIR and leaves nothing behind: stops kube-scheduler,
# kube-controller-manager, kube-apiserver and etcd by their pid files (TERM,
# then KILL after 3 s; a pid is only signalled while it still runs one of
# the control plane's binaries with DIR in its command line), then any such
# process whose pid file was lost, releases the port block and removes DIR.
#
# Safe to run twice, and on a DIR where controlplane-start.sh failed. It only
# deletes DIR if controlplane-start.sh marked it or it is empty, and never
# crosses into another file system while deleting. Root is not needed.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
. "$SCRIPT_DIR/lib.sh"
# shellcheck source=controlplane-lib.sh
. "$SCRIPT_DIR/controlplane-lib.sh"

main() {
	local dir daemon pid
	[ "$#" -eq 1 ] || die "usage: $(basename "$0") DIR"
	dir="$(instance_dir "$1")"
	for daemon in kube-scheduler kube-controller-manager kube-apiserver etcd; do
		stop_daemon "$dir" "$daemon"
	done
	for pid in $(controlplane_pids "$dir"); do
		log "stopping leftover pid $pid ($(readlink "/proc/$pid/exe" 2>/dev/null || echo gone))"
		stop_pid "$pid" "$dir" "pid $pid"
	done
	release_port_slot "$dir"
	if [ -d "$dir" ]; then
		if [ ! -e "$dir/$CONTROLPLANE_MARKER" ] && [ -n "$(ls -A "$dir")" ]; then
			log "warning: $dir is not a control plane folder (no $CONTROLPLANE_MARKER): not deleting it"
		else
			rm -rf --one-file-system -- "$dir"
		fi
	fi
	log "stopped control plane $dir"
}

main "$@"
