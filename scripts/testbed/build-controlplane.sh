#!/usr/bin/env bash
# build-controlplane.sh: builds, once per machine, the Kubernetes control
# plane the end-to-end tests run against (a test fixture: the product is the
# Rust kubelet). From the Go module proxy, since no prebuilt release can be
# downloaded here:
#
#   $TESTBED_HOME/k8s-v1.35.4/bin/  kube-apiserver kube-controller-manager
#                                   kube-scheduler kubectl kubelet  (v1.35.4)
#                                   etcd                            (v3.6.16)
#
# upstream's kubelet is built as the reference to compare ours with. A binary
# that is already there and reports the right version is not built again, so
# on a warm machine this takes a second or two.
#
# How (see /work/shared/notes/control-plane.md for why):
#   - `go install k8s.io/kubernetes/cmd/...@v1.35.4` cannot work: its go.mod
#     requires the 31 staging modules (k8s.io/api, k8s.io/client-go, ...) at
#     v0.0.0, replaced by ./staging/... So a throw-away wrapper module
#     requires k8s.io/kubernetes v1.35.4, replaces every staging module (the
#     list is read from the proxy's go.mod) with its v0.35.4 release, copies
#     the `go` and `godebug` lines, lists the commands as `tool` directives,
#     runs `go mod tidy` and builds each command.
#   - Versions are stamped with -ldflags -X into k8s.io/component-base/version
#     and k8s.io/client-go/pkg/version (unstamped: v0.0.0-master).
#   - etcd: a second wrapper requires go.etcd.io/etcd/server/v3 v3.6.16 (its
#     go.mod's replace ../api lines only apply inside etcd's own repository),
#     built with an explicit -o .../etcd (the default name would be v3).
#   - CGO_ENABLED=0 GOWORK=off GOTOOLCHAIN=local, -trimpath, nice -n 19.
#   - The module and build caches live in $TESTBED_HOME/go (GOMODCACHE,
#     GOCACHE) so that they survive; about 1.1 GiB and 3.2 GiB.
# Cost on 2 cores, cold caches: about 10-15 minutes (the first Kubernetes
# binary warms the build cache; see README.md for measured times).
#
# Needs Go >= 1.26 (etcd 3.6.16 requires it) on PATH or in /usr/local/go/bin
# and the Go module proxy (GOPROXY, default proxy.golang.org). TESTBED_HOME
# (default /opt/kubelet-testbed) moves everything.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
. "$SCRIPT_DIR/lib.sh"

K8S_VERSION="$TESTBED_K8S_VERSION"
ETCD_VERSION="$TESTBED_ETCD_VERSION"
BIN_DIR="$TESTBED_K8S_BIN_DIR"
K8S_COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet)
# The packages the wrapper module lists as `tool` directives (build-conformance.sh,
# which sources this file, adds the e2e test images and ginkgo).
K8S_TOOLS=()
for _cmd in "${K8S_COMMANDS[@]}"; do K8S_TOOLS+=("k8s.io/kubernetes/cmd/$_cmd"); done
unset _cmd
GO_DIR="$TESTBED_HOME/go"

# The version a binary reports, or nothing if it does not run.
binary_version() {
	local name="$1" path="$BIN_DIR/$1"
	[ -x "$path" ] || return 0
	case "$name" in
	kubectl) "$path" version --client 2>/dev/null | awk '/^Client Version:/ { print $3 }' ;;
	etcd) "$path" --version 2>/dev/null | awk '/^etcd Version:/ { print "v" $3 }' ;;
	*) "$path" --version 2>/dev/null | awk '{ print $2 }' ;;
	esac
}

want_version() {
	case "$1" in
	etcd) echo "v$ETCD_VERSION" ;;
	*) echo "v$K8S_VERSION" ;;
	esac
}

is_built() {
	[ "$(binary_version "$1")" = "$(want_version "$1")" ]
}

find_go() {
	if command -v go >/dev/null 2>&1; then
		command -v go
	elif [ -x /usr/local/go/bin/go ]; then
		echo /usr/local/go/bin/go
	else
		die "Go is missing (need Go >= 1.26 on PATH or in /usr/local/go/bin) to build the control plane"
	fi
}

go_env() {
	export GOMODCACHE="$GO_DIR/mod" GOCACHE="$GO_DIR/cache" GOPATH="$GO_DIR/path"
	export CGO_ENABLED=0 GOWORK=off GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
}

# The go.mod of a module version, from the proxy (through `go mod download`,
# which honours GOPROXY and GONOSUMDB like every other go command).
proxy_go_mod() {
	local module="$1" version="$2" file
	file="$(cd "$WORK" && "$GO" mod download -json "$module@$version" |
		awk -F'"' '$2 == "GoMod" { print $4 }')"
	[ -r "$file" ] || die "could not get the go.mod of $module@$version from the module proxy"
	cat "$file"
}

timed() {
	local what="$1" start=$SECONDS
	shift
	"$@"
	log "$what took $((SECONDS - start)) s"
}

write_k8s_wrapper() {
	local dir="$1" mod go_line godebug_line cmd module
	mkdir -p "$dir"
	# A module with nothing in it is enough for `go mod download`.
	mod="$(proxy_go_mod k8s.io/kubernetes "v$K8S_VERSION")"
	go_line="$(echo "$mod" | grep -m1 -E '^go [0-9]')" || die "no go line in k8s.io/kubernetes's go.mod"
	godebug_line="$(echo "$mod" | grep -E '^godebug ' || true)"
	{
		echo "// Throw-away wrapper written by scripts/testbed/build-controlplane.sh."
		echo "module kubelet-testbed/k8s-wrapper"
		echo
		echo "$go_line"
		[ -z "$godebug_line" ] || echo "$godebug_line"
		echo
		echo "require k8s.io/kubernetes v$K8S_VERSION"
		echo
		echo "tool ("
		for cmd in "${K8S_TOOLS[@]}"; do
			echo "	$cmd"
		done
		echo ")"
		echo
		echo "replace ("
		echo "$mod" | awk '/=> *\.\/staging\// { for (i = 1; i <= NF; i++) if ($i ~ /^k8s\.io\//) { print $i; break } }' |
			sort -u | while read -r module; do
			echo "	$module => $module v0.${K8S_VERSION#1.}"
		done
		echo ")"
	} >"$dir/go.mod"
	grep -q '=> k8s.io/api v0' "$dir/go.mod" ||
		die "found no staging modules in k8s.io/kubernetes@v$K8S_VERSION's go.mod"
}

# The release's time, from the proxy's .info (the proxy gives no commit).
k8s_release_time() {
	local info
	info="$(cd "$WORK" && "$GO" mod download -json "k8s.io/kubernetes@v$K8S_VERSION" |
		awk -F'"' '$2 == "Info" { print $4 }')"
	sed -n 's/.*"Time": *"\([^"]*\)".*/\1/p' "$info" 2>/dev/null
}

k8s_ldflags() {
	local minor pkg date flags="-s -w"
	minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
	date="$(k8s_release_time)"
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		flags="$flags -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=1"
		flags="$flags -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
		[ -z "$date" ] || flags="$flags -X $pkg.buildDate=$date"
	done
	echo "$flags"
}

# go_build DIR OUTPUT PACKAGE [LDFLAGS]: builds into OUTPUT.tmp, then renames.
go_build() {
	local dir="$1" out="$2" pkg="$3" ldflags="${4:--s -w}"
	(cd "$dir" && nice -n 19 "$GO" build -trimpath -ldflags "$ldflags" -o "$out.tmp" "$pkg") ||
		{ rm -f "$out.tmp"; die "building $pkg failed"; }
	mv -f "$out.tmp" "$out"
}

build_k8s() {
	local missing=() cmd dir="$WORK/k8s" ldflags
	for cmd in "${K8S_COMMANDS[@]}"; do
		is_built "$cmd" || missing+=("$cmd")
	done
	if [ "${#missing[@]}" -eq 0 ]; then
		log "Kubernetes v$K8S_VERSION binaries already in $BIN_DIR"
		return 0
	fi
	log "building Kubernetes v$K8S_VERSION: ${missing[*]} (from the Go module proxy; about 10 minutes on 2 cores when the caches are cold)"
	write_k8s_wrapper "$dir"
	timed "go mod tidy (k8s.io/kubernetes v$K8S_VERSION)" \
		bash -c 'cd "$1" && nice -n 19 "$2" mod tidy' _ "$dir" "$GO"
	ldflags="$(k8s_ldflags)"
	for cmd in "${missing[@]}"; do
		timed "building $cmd v$K8S_VERSION" go_build "$dir" "$BIN_DIR/$cmd" "k8s.io/kubernetes/cmd/$cmd" "$ldflags"
	done
}

build_etcd() {
	local dir="$WORK/etcd"
	if is_built etcd; then
		log "etcd v$ETCD_VERSION already in $BIN_DIR"
		return 0
	fi
	log "building etcd v$ETCD_VERSION (about 2 minutes on 2 cores when the caches are cold)"
	mkdir -p "$dir"
	cat >"$dir/go.mod" <<EOF
// Throw-away wrapper written by scripts/testbed/build-controlplane.sh.
module kubelet-testbed/etcd-wrapper

go 1.26.0

require go.etcd.io/etcd/server/v3 v$ETCD_VERSION

tool go.etcd.io/etcd/server/v3
EOF
	timed "go mod tidy (etcd v$ETCD_VERSION)" bash -c 'cd "$1" && nice -n 19 "$2" mod tidy' _ "$dir" "$GO"
	timed "building etcd v$ETCD_VERSION" go_build "$dir" "$BIN_DIR/etcd" go.etcd.io/etcd/server/v3
}

main() {
	local name version all_built=yes start=$SECONDS
	for name in etcd "${K8S_COMMANDS[@]}"; do
		is_built "$name" || all_built=""
	done
	if [ -z "$all_built" ]; then
		GO="$(find_go)"
		go_env
		mkdir -p "$BIN_DIR" "$GO_DIR"
		# One build at a time (two install.sh runs would share the caches).
		exec 8>"$GO_DIR/.build.lock"
		flock 8
		WORK="$(mktemp -d /tmp/kubelet-testbed-go.XXXXXX)"
		trap 'rm -rf "$WORK"' EXIT
		log "Go: $("$GO" version), caches in $GO_DIR"
		build_etcd
		build_k8s
		log "control plane built in $((SECONDS - start)) s"
	fi
	for name in etcd "${K8S_COMMANDS[@]}"; do
		version="$(binary_version "$name")"
		[ "$version" = "$(want_version "$name")" ] ||
			die "$BIN_DIR/$name reports '${version}', not $(want_version "$name")"
		log "$name $version: $BIN_DIR/$name"
	done
}

# build-conformance.sh sources this file for its wrapper-module helpers.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	main "$@"
fi
