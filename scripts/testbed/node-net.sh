#!/usr/bin/env bash
# node-net.sh up NAME | down NAME: a non-loopback address for a test node.
#
# Upstream's kubelet refuses a loopback node IP, and a Node without an
# address cannot be reached for logs or exec. The kernel here has no `dummy`
# link type, and the tests never add addresses to `lo` or to interfaces they
# did not make. So `up` makes:
#   - a network namespace of its own, `kubelet-testbed-NAME` (ip netns add);
#   - a veth pair: the root end `ktn<hash of NAME>` in the root namespace with
#     the address 172.30.N.1/30, its peer `ktp<hash of NAME>` moved into that
#     namespace with 172.30.N.2/30, both up;
# where N (0..255) is unique among the instances that are up (claimed under
# $TESTBED_RUN/node-nets/N, and skipped when something on the machine
# already routes 172.30.N.0/30). It prints the root end's address
# (172.30.N.1) on stdout. Traffic to it stays on this machine (it is a local
# address); nothing is routed or masqueraded.
#
# `down NAME` deletes the veth pair (both ends), the namespace and the claim;
# safe to repeat, and on a NAME that never came up. Needs root.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
. "$SCRIPT_DIR/lib.sh"

CLAIMS="$TESTBED_RUN/node-nets"
# A claim older than this whose interface is missing is stale (the window
# covers an `up` that claimed N and has not made its link yet).
STALE_AFTER_SECONDS=60

names() {
	local hash
	hash="$(dir_hash "$NAME")"
	ROOT_IF="ktn$hash"
	PEER_IF="ktp$hash"
	NETNS="kubelet-testbed-$NAME"
}

claim_stale() {
	local claim="$1" owner age hash
	owner="$(cat "$claim/owner" 2>/dev/null || true)"
	age=$(($(date +%s) - $(stat -c %Y "$claim" 2>/dev/null || date +%s)))
	[ "$age" -gt "$STALE_AFTER_SECONDS" ] || return 1
	[ -n "$owner" ] || return 0
	hash="$(dir_hash "$owner")"
	! ip link show "ktn$hash" >/dev/null 2>&1
}

# Prints N, the /30 claimed for NAME.
claim_block() {
	local start n i
	mkdir -p "$CLAIMS"
	start=$((0x$(dir_hash "$NAME" | cut -c1-4) % 256))
	for i in $(seq 0 255); do
		n=$(((start + i) % 256))
		if [ -d "$CLAIMS/$n" ] && claim_stale "$CLAIMS/$n"; then
			rm -rf "$CLAIMS/$n"
		fi
		if [ -n "$(ip -4 route show table all to match "172.30.$n.1/32" 2>/dev/null | grep -v '^default' || true)" ] ||
			ip -4 -o addr show | grep -F " 172.30.$n." >/dev/null; then
			continue
		fi
		if mkdir "$CLAIMS/$n" 2>/dev/null; then
			echo "$NAME" >"$CLAIMS/$n/owner"
			echo "$n"
			return 0
		fi
	done
	return 1
}

release_claims() {
	local claim
	for claim in "$CLAIMS"/*/owner; do
		[ -e "$claim" ] || continue
		if [ "$(cat "$claim" 2>/dev/null)" = "$NAME" ]; then
			rm -rf "$(dirname "$claim")"
		fi
	done
}

teardown() {
	# Deleting either end of a veth pair deletes both.
	if ip link show "$ROOT_IF" >/dev/null 2>&1; then
		ip link delete "$ROOT_IF" || log "warning: could not delete $ROOT_IF"
	fi
	if ip netns list | awk '{ print $1 }' | grep -xF -- "$NETNS" >/dev/null; then
		ip netns delete "$NETNS" || log "warning: could not delete network namespace $NETNS"
	fi
	release_claims
}

up() {
	local n
	if ip link show "$ROOT_IF" >/dev/null 2>&1; then
		die "$ROOT_IF for '$NAME' is already up: run $(basename "$0") down $NAME first"
	fi
	if ip netns list | awk '{ print $1 }' | grep -xF -- "$NETNS" >/dev/null; then
		die "network namespace $NETNS already exists: run $(basename "$0") down $NAME first"
	fi
	trap 'rc=$?; [ "$rc" -eq 0 ] || teardown; exit "$rc"' EXIT
	n="$(claim_block)" || die "no free 172.30.N.0/30 left"
	ip netns add "$NETNS"
	ip link add "$ROOT_IF" type veth peer name "$PEER_IF" netns "$NETNS"
	ip addr add "172.30.$n.1/30" dev "$ROOT_IF"
	ip -n "$NETNS" addr add "172.30.$n.2/30" dev "$PEER_IF"
	ip -n "$NETNS" link set lo up
	ip -n "$NETNS" link set "$PEER_IF" up
	ip link set "$ROOT_IF" up
	# The address is usable once the link has carrier (both ends up).
	for _ in $(seq 1 50); do
		if ip -4 -o addr show dev "$ROOT_IF" | grep -v tentative | grep -F "172.30.$n.1/30" >/dev/null &&
			[ "$(cat "/sys/class/net/$ROOT_IF/operstate" 2>/dev/null)" = up ]; then
			log "node network '$NAME': $ROOT_IF 172.30.$n.1/30, peer $PEER_IF 172.30.$n.2/30 in netns $NETNS"
			echo "172.30.$n.1"
			return 0
		fi
		sleep 0.1
	done
	die "$ROOT_IF did not come up"
}

main() {
	[ "$#" -eq 2 ] || die "usage: $(basename "$0") up|down NAME"
	NAME="$2"
	[[ "$NAME" =~ ^[a-z0-9]([-a-z0-9.]{0,40}[a-z0-9])?$ ]] ||
		die "NAME '$NAME' must be lower-case letters, digits, '-' and '.' (at most 42)"
	require_root
	names
	case "$1" in
	up) up ;;
	down)
		teardown
		log "node network '$NAME' is down"
		;;
	*) die "usage: $(basename "$0") up|down NAME" ;;
	esac
}

main "$@"
