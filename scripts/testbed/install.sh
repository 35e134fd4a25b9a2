#!/usr/bin/env bash
# install.sh: sets up a fresh Debian 12 (bookworm) machine, as root, for the
# containerd test bed; safe to run again (it skips what is already done).
#
#  1. Installs Debian 12's containerd (1.6), runc, CNI plugins (/usr/lib/cni),
#     busybox-static, umoci, protoc (the k8s-cri crate needs it), iproute2,
#     openssl (the control plane's certificates)
#     and gcc, running `apt-get update` only if something is missing.
#  2. Tries to get containerd 1.7 (it implements CRI GetContainerEvents, 1.6
#     does not) from Debian 13 "trixie" without touching the system's apt
#     state: a private sources list, lists and cache in a temporary folder,
#     `apt-get download containerd`, `dpkg-deb -x`. Only its containerd,
#     containerd-shim-runc-v2 and ctr are kept, in
#     $TESTBED_HOME/containerd-1.7/bin; they run on bookworm's glibc. Its
#     runc dependency would need glibc 2.38: bookworm's /usr/sbin/runc is used.
#     The mirror is the one the system's own apt sources name, with the
#     suite swapped to trixie. If any of this fails, the system's
#     containerd 1.6 is used instead, and the script says so.
#  3. Unpacks Debian 12's kubectl (package kubernetes-client, `apt-get
#     download` + `dpkg-deb -x`, not installed system-wide) into
#     $TESTBED_HOME/kubernetes-client, for the node API end-to-end tests.
#     Best effort: without it those tests skip their kubectl part.
#  4. Writes $TESTBED_HOME/env (KEY=VALUE lines read by start.sh/stop.sh).
#  5. Builds the images with build-images.sh.
#  6. Builds the Kubernetes v1.35.4 control plane (etcd, kube-apiserver,
#     kube-controller-manager, kube-scheduler, kubectl, and upstream's
#     kubelet as a reference) from the Go module proxy with
#     build-controlplane.sh into $TESTBED_HOME/k8s-v1.35.4/bin: 10-15 minutes
#     on a fresh 2-core machine, seconds once built. Needs Go >= 1.26.
# Installing trixie packages with apt (apt-get install -t trixie) would
# upgrade glibc system-wide: this script never does.
# Set TESTBED_CONTAINERD=system to skip step 2 and use containerd 1.6.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
. "$SCRIPT_DIR/lib.sh"

PACKAGES=(containerd runc containernetworking-plugins busybox-static umoci
	protobuf-compiler iproute2 gcc libc6-dev openssl)
CONTAINERD17_DIR="$TESTBED_HOME/containerd-1.7"
RUNC="$TESTBED_RUNC_BINARY"
CNI_BIN_DIR=/usr/lib/cni

package_installed() {
	[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = "installed" ]
}

install_packages() {
	local missing=() pkg
	for pkg in "${PACKAGES[@]}"; do
		package_installed "$pkg" || missing+=("$pkg")
	done
	if [ "${#missing[@]}" -eq 0 ]; then
		log "Debian packages already installed"
		return 0
	fi
	log "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update
	apt-get install -y --no-install-recommends "${missing[@]}"
}

# Downloads and unpacks trixie's containerd into $CONTAINERD17_DIR/bin.
# Returns non-zero (after saying why) if it cannot.
fetch_containerd17() {
	local codename entry uri key arch work opts deb
	codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
	entry="$(system_debian_source "$codename")"
	if [ -z "$entry" ]; then
		log "no apt source for suite '$codename' found in /etc/apt: cannot derive a mirror for trixie"
		return 1
	fi
	uri="${entry% *}"
	key="${entry##* }"
	arch="$(dpkg --print-architecture)"
	log "fetching containerd from trixie at $uri (private apt state, system apt untouched)"

	work="$(mktemp -d /tmp/kubelet-testbed-trixie.XXXXXX)"
	mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/download" "$work/unpacked"
	opts="arch=$arch target=Packages"
	[ "$key" != "-" ] && opts="$opts signed-by=$key"
	echo "deb [$opts] $uri trixie main" >"$work/trixie.list"
	# Read after the system's apt.conf.d, so it can also drop the system's
	# post-update/post-dpkg hooks, which clean the system's cache.
	cat >"$work/apt.conf" <<EOF
#clear APT::Update::Post-Invoke;
#clear APT::Update::Post-Invoke-Success;
#clear DPkg::Post-Invoke;
Dir::Etc::SourceList "$work/trixie.list";
Dir::Etc::SourceParts "/dev/null";
Dir::Etc::Preferences "/dev/null";
Dir::Etc::PreferencesParts "/dev/null";
Dir::State::Lists "$work/lists";
Dir::Cache "$work/cache";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT::Sandbox::User "root";
Acquire::Languages "none";
EOF
	if ! apt-get -q -c "$work/apt.conf" --error-on=any update >"$work/update.log" 2>&1; then
		log "apt-get update for trixie failed:"
		tail -n 5 "$work/update.log" >&2
		rm -rf "$work"
		return 1
	fi
	if ! (cd "$work/download" && apt-get -q -c "$work/apt.conf" download containerd/trixie) >"$work/download.log" 2>&1; then
		log "apt-get download containerd/trixie failed:"
		tail -n 5 "$work/download.log" >&2
		rm -rf "$work"
		return 1
	fi
	deb="$(ls "$work"/download/containerd_*.deb)"
	dpkg-deb -x "$deb" "$work/unpacked"

	# Only these three: the package's runc (if any) needs a newer glibc.
	rm -rf "$CONTAINERD17_DIR.new"
	mkdir -p "$CONTAINERD17_DIR.new/bin"
	for bin in containerd containerd-shim-runc-v2 ctr; do
		install -m 0755 "$work/unpacked/usr/bin/$bin" "$CONTAINERD17_DIR.new/bin/$bin"
	done
	dpkg-deb -f "$deb" Version >"$CONTAINERD17_DIR.new/VERSION"
	rm -rf "$work"

	if ! containerd17_works "$CONTAINERD17_DIR.new/bin"; then
		log "trixie's containerd does not run on this machine"
		rm -rf "$CONTAINERD17_DIR.new"
		return 1
	fi
	rm -rf "$CONTAINERD17_DIR"
	mv "$CONTAINERD17_DIR.new" "$CONTAINERD17_DIR"
}

# True if the three binaries in $1 run here and containerd is 1.7 or newer.
containerd17_works() {
	local bin_dir="$1" version
	"$bin_dir/ctr" --version >/dev/null 2>&1 || return 1
	"$bin_dir/containerd-shim-runc-v2" -v >/dev/null 2>&1 || return 1
	version="$(containerd_version "$bin_dir")" || return 1
	case "$version" in
	1.[0-6].* | 0.*) return 1 ;;
	esac
}

# "1.7.24" from "containerd github.com/containerd/containerd 1.7.24~ds1 ...".
containerd_version() {
	"$1/containerd" --version 2>/dev/null | awk '{ print $3 }' | sed -e 's/^v//' -e 's/[~+-].*//'
}

choose_containerd() {
	if [ "${TESTBED_CONTAINERD:-}" = "system" ]; then
		log "TESTBED_CONTAINERD=system: not fetching containerd 1.7"
	elif [ -x "$CONTAINERD17_DIR/bin/containerd" ] && containerd17_works "$CONTAINERD17_DIR/bin"; then
		log "containerd $(containerd_version "$CONTAINERD17_DIR/bin") already in $CONTAINERD17_DIR/bin"
	elif ! fetch_containerd17; then
		log "could not get containerd 1.7 from trixie"
	fi

	if [ "${TESTBED_CONTAINERD:-}" != "system" ] && [ -x "$CONTAINERD17_DIR/bin/containerd" ]; then
		CHOSEN_BIN_DIR="$CONTAINERD17_DIR/bin"
	else
		CHOSEN_BIN_DIR=/usr/bin
	fi
	CHOSEN_VERSION="$(containerd_version "$CHOSEN_BIN_DIR")"
	[ -n "$CHOSEN_VERSION" ] || die "$CHOSEN_BIN_DIR/containerd does not run"
}

KUBECTL_DIR="$TESTBED_HOME/kubernetes-client"

# Unpacks bookworm's kubectl into $KUBECTL_DIR (the system is not touched).
fetch_kubectl() {
	local work deb
	if [ -x "$KUBECTL_DIR/kubectl" ]; then
		log "kubectl already in $KUBECTL_DIR"
		return 0
	fi
	work="$(mktemp -d /tmp/kubelet-testbed-kubectl.XXXXXX)"
	if ! (cd "$work" && apt-get -q download kubernetes-client) >"$work/download.log" 2>&1; then
		# A fresh machine may have no package lists yet.
		apt-get -q update >/dev/null 2>&1 || true
		if ! (cd "$work" && apt-get -q download kubernetes-client) >"$work/download.log" 2>&1; then
			log "cannot download kubernetes-client (kubectl tests will skip):"
			tail -n 3 "$work/download.log" >&2
			rm -rf "$work"
			return 0
		fi
	fi
	deb="$(ls "$work"/kubernetes-client_*.deb)"
	dpkg-deb -x "$deb" "$work/unpacked"
	mkdir -p "$KUBECTL_DIR"
	install -m 0755 "$work/unpacked/usr/bin/kubectl" "$KUBECTL_DIR/kubectl"
	log "kubectl $(dpkg-deb -f "$deb" Version) in $KUBECTL_DIR"
	rm -rf "$work"
}

write_env() {
	mkdir -p "$TESTBED_HOME"
	cat >"$TESTBED_ENV_FILE.tmp" <<EOF
# Written by scripts/testbed/install.sh; read by start.sh and stop.sh.
TESTBED_CONTAINERD_BIN_DIR=$CHOSEN_BIN_DIR
TESTBED_CONTAINERD_VERSION=$CHOSEN_VERSION
TESTBED_RUNC=$RUNC
TESTBED_CNI_BIN_DIR=$CNI_BIN_DIR
TESTBED_IMAGES_DIR=$TESTBED_HOME/images
EOF
	mv -f "$TESTBED_ENV_FILE.tmp" "$TESTBED_ENV_FILE"
}

main() {
	local plugin
	require_root
	install_packages
	[ -x "$RUNC" ] || die "$RUNC is missing (Debian package runc)"
	for plugin in bridge host-local loopback; do
		[ -x "$CNI_BIN_DIR/$plugin" ] ||
			die "$CNI_BIN_DIR/$plugin is missing (Debian package containernetworking-plugins)"
	done
	choose_containerd
	fetch_kubectl
	write_env
	"$SCRIPT_DIR/build-images.sh"
	case "$CHOSEN_VERSION" in
	1.[0-6].*) log "USING THE FALLBACK: containerd $CHOSEN_VERSION from $CHOSEN_BIN_DIR (Debian 12; no CRI GetContainerEvents)" ;;
	*) log "using containerd $CHOSEN_VERSION from $CHOSEN_BIN_DIR" ;;
	esac
	log "runc: $RUNC ($("$RUNC" --version | sed -n 1p))"
	log "settings written to $TESTBED_ENV_FILE"
	# Last: it is the long one on a fresh machine. It prints each binary's version.
	"$SCRIPT_DIR/build-controlplane.sh"
}

main "$@"
