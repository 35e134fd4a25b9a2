#!/usr/bin/env bash
# build-images.sh: builds the two images the test bed needs, without any
# registry (none can be reached here), as OCI layout tarballs:
#   $TESTBED_HOME/images/pause.tar    -> localhost/pause:3.10     (entrypoint /pause)
#   $TESTBED_HOME/images/busybox.tar  -> localhost/busybox:latest (cmd /bin/sh)
# start.sh imports them with `ctr images import --base-name localhost/NAME`,
# which names each image localhost/NAME:<the layout's ref name>.
#
# Relies on (Debian packages, installed by install.sh): gcc + libc6-dev for a
# static pause built from images/pause/pause.c, busybox-static for a static
# /bin/busybox, umoci to make OCI layouts.
# Builds in a temporary folder; skips the build when the tarballs exist and
# their inputs did not change (pass --force to rebuild anyway).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/../.." && pwd)"
# shellcheck source=lib.sh
. "$SCRIPT_DIR/lib.sh"

PAUSE_SRC="$REPO_DIR/images/pause/pause.c"
BUSYBOX_BIN=/bin/busybox
OUT_DIR="$TESTBED_HOME/images"
STAMP="$OUT_DIR/.inputs.sha256"
IMAGE_PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# The sums of everything the images are made from.
input_sums() {
	sha256sum "$PAUSE_SRC" "$BUSYBOX_BIN" "$SCRIPT_DIR/build-images.sh" | awk '{ print $1 }'
}

up_to_date() {
	[ -s "$OUT_DIR/pause.tar" ] && [ -s "$OUT_DIR/busybox.tar" ] &&
		[ -r "$STAMP" ] && [ "$(cat "$STAMP")" = "$(input_sums)" ]
}

# new_image LAYOUT TAG BUNDLE: an empty image LAYOUT:TAG unpacked at BUNDLE.
new_image() {
	local layout="$1" tag="$2" bundle="$3"
	umoci init --layout "$layout"
	umoci new --image "$layout:$tag"
	umoci unpack --image "$layout:$tag" "$bundle"
}

# commit_image LAYOUT TAG BUNDLE: commits BUNDLE's rootfs as the image's layer.
commit_image() {
	local layout="$1" tag="$2" bundle="$3"
	umoci repack --image "$layout:$tag" "$bundle"
}

# write_tarball LAYOUT OUT: drops unreferenced blobs and writes the layout as
# a tarball to OUT (atomically).
write_tarball() {
	local layout="$1" out="$2"
	umoci gc --layout "$layout"
	tar -C "$layout" -cf "$out.tmp" .
	mv -f "$out.tmp" "$out"
}

build_pause() {
	local work="$1" layout="$1/pause-layout" bundle="$1/pause-bundle"
	gcc -static -O2 -Wall -o "$work/pause" "$PAUSE_SRC"
	strip "$work/pause"

	new_image "$layout" 3.10 "$bundle"
	install -m 0755 "$work/pause" "$bundle/rootfs/pause"
	commit_image "$layout" 3.10 "$bundle"
	# Like the upstream pause image: entrypoint /pause, user 65535.
	umoci config --image "$layout:3.10" \
		--config.entrypoint /pause \
		--config.user 65535:65535 \
		--config.env "PATH=$IMAGE_PATH" \
		--history.created_by "build-images.sh: config"
	write_tarball "$layout" "$OUT_DIR/pause.tar"
}

build_busybox() {
	local layout="$1/busybox-layout" bundle="$1/busybox-bundle"
	local rootfs applet
	new_image "$layout" latest "$bundle"
	rootfs="$bundle/rootfs"

	mkdir -p "$rootfs/bin" "$rootfs/sbin" "$rootfs/usr/bin" "$rootfs/usr/sbin" \
		"$rootfs/etc" "$rootfs/root" "$rootfs/var" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev"
	install -d -m 1777 "$rootfs/tmp"
	install -m 0755 "$BUSYBOX_BIN" "$rootfs/bin/busybox"
	# One symlink per applet, where busybox itself would put it (bin/sh,
	# bin/sleep, bin/dd, usr/bin/env, ...), each pointing at /bin/busybox.
	for applet in $("$BUSYBOX_BIN" --list-full); do
		[ "$applet" = "bin/busybox" ] && continue
		[ -e "$rootfs/$applet" ] || ln -s /bin/busybox "$rootfs/$applet"
	done
	printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' \
		'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$rootfs/etc/passwd"
	printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$rootfs/etc/group"
	commit_image "$layout" latest "$bundle"

	umoci config --image "$layout:latest" \
		--config.cmd /bin/sh \
		--config.env "PATH=$IMAGE_PATH" \
		--history.created_by "build-images.sh: config"
	write_tarball "$layout" "$OUT_DIR/busybox.tar"
}

main() {
	require_root
	local force=0
	[ "${1:-}" = "--force" ] && force=1
	for tool in gcc strip umoci tar; do
		command -v "$tool" >/dev/null || die "$tool is missing: run scripts/testbed/install.sh"
	done
	[ -x "$BUSYBOX_BIN" ] || die "$BUSYBOX_BIN is missing (Debian package busybox-static)"
	[ -r "$PAUSE_SRC" ] || die "$PAUSE_SRC is missing"

	mkdir -p "$OUT_DIR"
	if [ "$force" -eq 0 ] && up_to_date; then
		log "images are up to date in $OUT_DIR"
		return 0
	fi

	WORK="$(mktemp -d /tmp/kubelet-testbed-images.XXXXXX)"
	trap 'rm -rf "$WORK"' EXIT
	build_pause "$WORK"
	build_busybox "$WORK"
	input_sums >"$STAMP"
	log "built $OUT_DIR/pause.tar (localhost/pause:3.10) and $OUT_DIR/busybox.tar (localhost/busybox:latest)"
}

main "$@"
