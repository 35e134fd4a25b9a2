#!/usr/bin/env bash
# stop.sh DIR: stops the containerd instance that start.sh started under DIR
# and leaves nothing behind: kills every task (SIGKILL) and deletes every
# container through ctr while containerd still answers, stops containerd by
# DIR/containerd.pid (TERM, then KILL after 10 s), kills leftover shims whose
# command line names DIR/containerd.sock, force-deletes containers left in
# DIR's runc root, unmounts everything under DIR (deepest first), deletes the
# instance's bridge (ktb<hash of DIR>), releases its subnet and removes DIR.
#
# Safe to run twice, and on a DIR where start.sh failed. For safety it only
# deletes DIR if start.sh marked it (DIR/.kubelet-testbed) or it is empty,
# and never crosses into another file system while deleting.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
. "$SCRIPT_DIR/lib.sh"

remove_dir() {
	local dir="$1"
	[ -d "$dir" ] || return 0
	if [ ! -e "$dir/.kubelet-testbed" ] && [ -n "$(ls -A "$dir")" ]; then
		log "warning: $dir is not a test bed folder (no .kubelet-testbed): not deleting it"
		return 0
	fi
	if [ -n "$(mounts_under "$dir")" ]; then
		die "still mounted under $dir: $(mounts_under "$dir" | tr '\n' ' ')"
	fi
	rm -rf --one-file-system -- "$dir"
}

main() {
	require_root
	[ "$#" -eq 1 ] || die "usage: $(basename "$0") DIR"
	local dir
	dir="$(instance_dir "$1")"
	teardown_instance "$dir"
	remove_dir "$dir"
	log "stopped $dir"
}

main "$@"
