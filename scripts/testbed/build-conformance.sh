#!/usr/bin/env bash
# build-conformance.sh: builds, once per machine, what scripts/conformance.sh
# needs to run upstream's [NodeConformance] e2e tests without a registry (test
# fixtures: the product is the Rust kubelet).
#
#   $TESTBED_HOME/k8s-v1.35.4/conformance/
#       e2e.test   go test -c k8s.io/kubernetes/test/e2e  (v1.35.4, ~5 min, 100 MB)
#       ginkgo     the ginkgo CLI at the version k8s.io/kubernetes pins (parallel runs)
#       agnhost    test/images/agnhost       nnp  test/images/nonewprivs
#       busybox    a vanilla static busybox built from Debian's source package
#       nc         OpenBSD netcat and its library, for the agnhost image
#   $TESTBED_HOME/images/conformance/*.tar   OCI layouts (umoci) of the images the
#       pinned framework asks for (test/utils/image/manifest.go at v1.35.4):
#         registry.k8s.io/e2e-test-images/agnhost:2.59 and :2.55
#         registry.k8s.io/e2e-test-images/busybox:1.37.0-1
#         registry.k8s.io/e2e-test-images/nonewprivs:1.3
#         registry.k8s.io/e2e-test-images/nonroot:1.4
#         registry.k8s.io/pause:3.10.1   (the test bed's own pause, retagged)
#       and images.list: "TARBALL BASE_NAME" lines for `start.sh DIR --import LIST`.
#
# Why each piece is made this way (see /work/shared/notes/conformance.md):
#   - The Go programs build in the same throw-away wrapper module and Go caches
#     as the control plane (this script sources build-controlplane.sh for its
#     helpers), so the staging modules resolve to the same v0.35.4 releases.
#     `go test -c` runs with -mod=mod: the e2e package's test-only imports are
#     not among the tools `go mod tidy` saw, so their go.sum lines are added then.
#   - Debian's busybox binary fails tests: a Debian patch makes ash drop
#     environment variables whose names are not identifiers (ConfigMap/Secret
#     envFrom tests), and its standalone-shell option runs the nc applet instead
#     of an image's /usr/bin/nc. So busybox is built from the upstream tarball
#     inside Debian's source package (`apt-get source --download-only`, with a
#     private sources list and state: the system's apt is not touched),
#     without Debian's patches: defconfig + static.
#   - The agnhost image is alpine-like: busybox applets, plus what the tests run
#     inside it: curl and bash (the host's, with their libraries and loader),
#     an OpenBSD nc (UDP with -u; Debian's netcat-openbsd, downloaded, not
#     installed), uid 1000 / gid 50000 like upstream's image, /uploads, the
#     porter's localhost.crt/.key, ENTRYPOINT /agnhost, CMD pause.
#   - The busybox image has every applet in /bin too: tests exec /bin/sysctl.
#   - invalid.registry.k8s.io/invalid/alpine:3.1 is never made: a test expects
#     its pull to fail.
# What is there with the right inputs is not built again (a second run takes a
# second); --force rebuilds the images (not the Go binaries).
#
# Cost on 2 cores, nice 19, with the control plane's caches warm: e2e.test
# about 5 minutes, ginkgo 1.5, busybox 2, the rest seconds.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/../.." && pwd)"
# Defines the wrapper-module helpers (write_k8s_wrapper, go_build, go_env,
# k8s_ldflags, timed, find_go) and sources lib.sh; its main does not run.
# shellcheck source=build-controlplane.sh
. "$SCRIPT_DIR/build-controlplane.sh"

OUT="$TESTBED_HOME/k8s-v$K8S_VERSION/conformance"
IMG_DIR="$TESTBED_HOME/images/conformance"
GO_BINARIES=(e2e.test ginkgo agnhost nnp)
E2E_REGISTRY=registry.k8s.io/e2e-test-images
IMAGE_PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What the stamp of the Go binaries says: the release and this script's sum.
go_stamp() {
	echo "v$K8S_VERSION $(sed -n '/^build_go()/,/^}/p' "$SCRIPT_DIR/build-conformance.sh" | sha256sum | cut -c1-16)"
}

go_built() {
	local bin
	for bin in "${GO_BINARIES[@]}"; do
		[ -x "$OUT/$bin" ] || return 1
	done
	[ "$(cat "$OUT/.go-stamp" 2>/dev/null)" = "$(go_stamp)" ]
}

build_go() {
	local dir="$WORK/k8s" ldflags
	if go_built; then
		log "e2e.test, ginkgo, agnhost, nnp v$K8S_VERSION already in $OUT"
		return 0
	fi
	GO="$(find_go)"
	go_env
	mkdir -p "$OUT" "$GO_DIR"
	# One Go build at a time (the caches are shared with build-controlplane.sh).
	exec 8>"$GO_DIR/.build.lock"
	flock 8
	log "building the e2e test binaries v$K8S_VERSION (about 8 minutes on 2 cores)"
	K8S_TOOLS=(k8s.io/kubernetes/test/images/agnhost k8s.io/kubernetes/test/images/nonewprivs
		github.com/onsi/ginkgo/v2/ginkgo)
	write_k8s_wrapper "$dir"
	timed "go mod tidy (e2e wrapper)" bash -c 'cd "$1" && nice -n 19 "$2" mod tidy' _ "$dir" "$GO"
	ldflags="$(k8s_ldflags)"
	timed "building agnhost" go_build "$dir" "$OUT/agnhost" k8s.io/kubernetes/test/images/agnhost
	timed "building nnp" go_build "$dir" "$OUT/nnp" k8s.io/kubernetes/test/images/nonewprivs
	timed "building ginkgo" go_build "$dir" "$OUT/ginkgo" github.com/onsi/ginkgo/v2/ginkgo
	# shellcheck disable=SC2016
	timed "building e2e.test" bash -c 'cd "$1" && GOFLAGS="$GOFLAGS -mod=mod" nice -n 19 "$2" test -c -trimpath \
		-ldflags "$3" -o "$4.tmp" k8s.io/kubernetes/test/e2e && mv -f "$4.tmp" "$4"' \
		_ "$dir" "$GO" "$ldflags" "$OUT/e2e.test" || { rm -f "$OUT/e2e.test.tmp"; die "building e2e.test failed"; }
	go_stamp >"$OUT/.go-stamp"
}

# private_apt NAME LIST_LINE: writes $WORK/apt-NAME/apt.conf for an apt with
# its own sources list, lists and cache (the system's apt state is untouched).
private_apt() {
	local name="$1" line="$2" dir="$WORK/apt-$1"
	mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
	echo "$line" >"$dir/sources.list"
	cat >"$dir/apt.conf" <<EOF
#clear APT::Update::Post-Invoke;
#clear APT::Update::Post-Invoke-Success;
#clear DPkg::Post-Invoke;
Dir::Etc::SourceList "$dir/sources.list";
Dir::Etc::SourceParts "/dev/null";
Dir::Etc::Preferences "/dev/null";
Dir::Etc::PreferencesParts "/dev/null";
Dir::State::Lists "$dir/lists";
Dir::Cache "$dir/cache";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT::Sandbox::User "root";
Acquire::Languages "none";
EOF
	apt-get -q -c "$dir/apt.conf" --error-on=any update >"$dir/update.log" 2>&1 ||
		{ tail -n 5 "$dir/update.log" >&2; die "apt-get update ($name) failed"; }
	echo "$dir/apt.conf"
}

debian_mirror_line() {
	local kind="$1" codename entry uri key
	codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
	entry="$(system_debian_source "$codename")"
	[ -n "$entry" ] || die "no apt source for suite '$codename' found in /etc/apt"
	uri="${entry% *}"
	key="${entry##* }"
	if [ "$key" = "-" ]; then
		echo "$kind $uri $codename main"
	else
		echo "$kind [signed-by=$key] $uri $codename main"
	fi
}

build_busybox() {
	local conf src tarball
	# (Not `busybox | grep -q`: with pipefail, grep's early exit fails the pipe.)
	if [ -x "$OUT/busybox" ] && [[ "$("$OUT/busybox" 2>&1 || true)" == "BusyBox v"* ]] &&
		[ "$(cat "$OUT/.busybox-stamp" 2>/dev/null)" = "$(sed -n '/^build_busybox()/,/^}/p' "$0" | sha256sum)" ]; then
		log "vanilla busybox already in $OUT"
		return 0
	fi
	log "building a vanilla static busybox from Debian's source package (about 2 minutes)"
	conf="$(private_apt src "$(debian_mirror_line deb-src)")"
	src="$WORK/busybox-src"
	mkdir -p "$src"
	(cd "$src" && apt-get -q -c "$conf" source --download-only busybox) >"$WORK/busybox-source.log" 2>&1 ||
		{ tail -n 5 "$WORK/busybox-source.log" >&2; die "apt-get source busybox failed"; }
	tarball="$(ls "$src"/busybox_*.orig.tar.* | sed -n 1p)"
	[ -r "$tarball" ] || die "no upstream tarball in Debian's busybox source package"
	tar -C "$src" -xf "$tarball"
	(
		cd "$src"/busybox-[0-9]*/
		make defconfig >/dev/null
		# Static (the images have no libc); tc does not build against newer
		# kernel headers and no test uses it.
		sed -i -e 's/^# CONFIG_STATIC is not set/CONFIG_STATIC=y/' -e 's/^CONFIG_TC=y/# CONFIG_TC is not set/' .config
		yes '' | make oldconfig >/dev/null
		grep -q '^CONFIG_STATIC=y' .config
		if grep -q '^CONFIG_FEATURE_SH_STANDALONE=y' .config; then exit 1; fi
		nice -n 19 make -j2 busybox >"$WORK/busybox-make.log" 2>&1 ||
			{ tail -n 20 "$WORK/busybox-make.log" >&2; exit 1; }
		install -m 0755 busybox "$OUT/busybox.tmp"
	) || die "building busybox failed"
	mv -f "$OUT/busybox.tmp" "$OUT/busybox"
	sed -n '/^build_busybox()/,/^}/p' "$0" | sha256sum >"$OUT/.busybox-stamp"
}

fetch_nc() {
	local conf deb
	if [ -x "$OUT/nc/bin/nc.openbsd" ]; then
		return 0
	fi
	log "fetching Debian's netcat-openbsd (downloaded, not installed)"
	conf="$(private_apt bin "$(debian_mirror_line deb)")"
	mkdir -p "$WORK/nc-deb"
	(cd "$WORK/nc-deb" && apt-get -q -c "$conf" download netcat-openbsd) >"$WORK/nc.log" 2>&1 ||
		{ tail -n 5 "$WORK/nc.log" >&2; die "apt-get download netcat-openbsd failed"; }
	deb="$(ls "$WORK"/nc-deb/netcat-openbsd_*.deb)"
	rm -rf "$OUT/nc.tmp"
	dpkg-deb -x "$deb" "$OUT/nc.tmp"
	rm -rf "$OUT/nc"
	mv "$OUT/nc.tmp" "$OUT/nc"
}

# copy_with_libs ROOTFS BINARY DEST: copies a dynamically linked host binary to
# ROOTFS/DEST with the libraries and loader ldd names, at their host paths.
copy_with_libs() {
	local rootfs="$1" bin="$2" dest="$3" lib
	install -D -m 0755 "$bin" "$rootfs/$dest"
	for lib in $(ldd "$bin" | awk '/=> \// { print $3 } /^\t\// { print $1 }'); do
		[ -e "$rootfs/$lib" ] || install -D -m 0755 "$(readlink -f "$lib")" "$rootfs/$lib"
	done
}

# busybox_rootfs ROOTFS all-in-bin|alpine: the vanilla busybox and a link per
# applet: all in /bin (like the busybox image) or where busybox puts each
# (bin/sh, usr/bin/env, ...), like alpine.
busybox_rootfs() {
	local rootfs="$1" layout="$2" applet
	mkdir -p "$rootfs/bin" "$rootfs/sbin" "$rootfs/usr/bin" "$rootfs/usr/sbin" "$rootfs/etc" \
		"$rootfs/root" "$rootfs/var" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev" "$rootfs/home"
	install -d -m 1777 "$rootfs/tmp"
	install -m 0755 "$OUT/busybox" "$rootfs/bin/busybox"
	for applet in $("$OUT/busybox" --list-full); do
		[ "$applet" = "bin/busybox" ] && continue
		if [ "$layout" = all-in-bin ]; then
			applet="bin/$(basename "$applet")"
		fi
		[ -e "$rootfs/$applet" ] || ln -s /bin/busybox "$rootfs/$applet"
	done
	printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'daemon:x:1:1:daemon:/usr/sbin:/bin/false' \
		'bin:x:2:2:bin:/bin:/bin/false' 'sys:x:3:3:sys:/dev:/bin/false' \
		'www-data:x:33:33:www-data:/var/www:/bin/false' \
		'nobody:x:65534:65534:nobody:/home:/bin/false' >"$rootfs/etc/passwd"
	printf '%s\n' 'root:x:0:' 'daemon:x:1:' 'bin:x:2:' 'sys:x:3:' 'tty:x:5:' 'www-data:x:33:' \
		'users:x:100:' 'nogroup:x:65534:' >"$rootfs/etc/group"
}

# image NAME: a new layout $WORK/NAME with tag "build", unpacked at $WORK/NAME-bundle.
new_image() {
	local name="$1"
	umoci init --layout "$WORK/$name"
	umoci new --image "$WORK/$name:build"
	umoci unpack --image "$WORK/$name:build" "$WORK/$name-bundle"
}

# finish_image NAME TAG... -- CONFIG_ARGS...: commits the rootfs, sets the
# config, tags it TAG..., drops the build tag and writes IMG_DIR/NAME.tar.
finish_image() {
	local name="$1" tags=() tag
	shift
	while [ "$1" != "--" ]; do
		tags+=("$1")
		shift
	done
	shift
	umoci repack --image "$WORK/$name:build" "$WORK/$name-bundle"
	umoci config --image "$WORK/$name:build" --config.env "PATH=$IMAGE_PATH" \
		--history.created_by "build-conformance.sh" "$@"
	for tag in "${tags[@]}"; do
		umoci tag --image "$WORK/$name:build" "$tag"
	done
	umoci rm --image "$WORK/$name:build"
	umoci gc --layout "$WORK/$name"
	tar -C "$WORK/$name" -cf "$IMG_DIR/$name.tar.tmp" .
	mv -f "$IMG_DIR/$name.tar.tmp" "$IMG_DIR/$name.tar"
}

build_agnhost_image() {
	local rootfs="$WORK/agnhost-bundle/rootfs" porter
	porter="$GO_DIR/mod/k8s.io/kubernetes@v$K8S_VERSION/test/images/agnhost/porter"
	new_image agnhost
	busybox_rootfs "$rootfs" alpine
	install -m 0755 "$OUT/agnhost" "$rootfs/agnhost"
	ln -s agnhost "$rootfs/agnhost-2"
	mkdir -p "$rootfs/uploads"
	install -m 0644 "$porter/localhost.crt" "$porter/localhost.key" "$rootfs/"
	copy_with_libs "$rootfs" "$(command -v curl)" usr/bin/curl
	copy_with_libs "$rootfs" /bin/bash bin/bash
	rm -f "$rootfs/usr/bin/nc" "$rootfs/bin/nc"
	copy_with_libs "$rootfs" "$OUT/nc/bin/nc.openbsd" usr/bin/nc
	# nc.openbsd's libbsd comes from the host (ldd above) when the host has it.
	echo 'user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh' >>"$rootfs/etc/passwd"
	echo 'user-defined-in-image:x:1000:' >>"$rootfs/etc/group"
	echo 'group-defined-in-image:x:50000:user-defined-in-image' >>"$rootfs/etc/group"
	mkdir -p "$rootfs/home/user-defined-in-image"
	chown 1000:1000 "$rootfs/home/user-defined-in-image"
	finish_image agnhost 2.59 2.55 -- --config.entrypoint /agnhost --config.cmd pause
}

build_busybox_images() {
	new_image busybox
	busybox_rootfs "$WORK/busybox-bundle/rootfs" all-in-bin
	finish_image busybox 1.37.0-1 -- --config.cmd sh

	new_image nonewprivs
	busybox_rootfs "$WORK/nonewprivs-bundle/rootfs" all-in-bin
	install -D -m 4755 "$OUT/nnp" "$WORK/nonewprivs-bundle/rootfs/usr/local/bin/nnp"
	finish_image nonewprivs 1.3 -- --config.cmd nnp

	new_image nonroot
	busybox_rootfs "$WORK/nonroot-bundle/rootfs" all-in-bin
	finish_image nonroot 1.4 -- --config.cmd sh --config.user 1234
}

# The test bed's pause image (build-images.sh), retagged 3.10.1.
build_pause_image() {
	mkdir -p "$WORK/pause"
	tar -C "$WORK/pause" -xf "$TESTBED_HOME/images/pause.tar"
	umoci tag --image "$WORK/pause:3.10" 3.10.1
	umoci rm --image "$WORK/pause:3.10"
	tar -C "$WORK/pause" -cf "$IMG_DIR/pause.tar.tmp" .
	mv -f "$IMG_DIR/pause.tar.tmp" "$IMG_DIR/pause.tar"
}

image_inputs() {
	sha256sum "$OUT/agnhost" "$OUT/nnp" "$OUT/busybox" "$OUT/nc/bin/nc.openbsd" \
		"$TESTBED_HOME/images/pause.tar" "$SCRIPT_DIR/build-conformance.sh" | awk '{ print $1 }'
}

build_images() {
	local force="$1"
	if [ "$force" -eq 0 ] && [ -s "$IMG_DIR/images.list" ] &&
		[ "$(cat "$IMG_DIR/.inputs.sha256" 2>/dev/null)" = "$(image_inputs)" ]; then
		log "conformance images are up to date in $IMG_DIR"
		return 0
	fi
	mkdir -p "$IMG_DIR"
	build_agnhost_image
	build_busybox_images
	build_pause_image
	cat >"$IMG_DIR/images.list" <<EOF
$IMG_DIR/agnhost.tar $E2E_REGISTRY/agnhost
$IMG_DIR/busybox.tar $E2E_REGISTRY/busybox
$IMG_DIR/nonewprivs.tar $E2E_REGISTRY/nonewprivs
$IMG_DIR/nonroot.tar $E2E_REGISTRY/nonroot
$IMG_DIR/pause.tar registry.k8s.io/pause
EOF
	image_inputs >"$IMG_DIR/.inputs.sha256"
	log "conformance images in $IMG_DIR (list: $IMG_DIR/images.list)"
}

conformance_main() {
	local force=0 start=$SECONDS
	require_root
	[ "${1:-}" = "--force" ] && force=1
	for tool in umoci tar make gcc ldd curl dpkg-deb apt-get; do
		command -v "$tool" >/dev/null || die "$tool is missing: run scripts/testbed/install.sh"
	done
	[ -s "$TESTBED_HOME/images/pause.tar" ] || die "the test bed's images are missing: run install.sh"
	mkdir -p "$OUT"
	WORK="$(mktemp -d /tmp/kubelet-testbed-conformance.XXXXXX)"
	trap 'rm -rf "$WORK"' EXIT
	build_go
	build_busybox
	fetch_nc
	build_images "$force"
	log "conformance fixtures ready in $((SECONDS - start)) s: $OUT, $IMG_DIR"
}

conformance_main "$@"
