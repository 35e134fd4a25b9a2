#!/usr/bin/env bash
# demo.sh: the README's first command. On a fresh Debian 12 machine, as root:
# installs the test bed (containerd, runc, CNI, local images), starts a
# private containerd, runs one pod on it through the project's CRI client
# (examples/cri_demo.rs) and shows its cgroup limit and logs, then stops
# containerd and removes everything it created.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/testbed/install.sh
dir="$(mktemp -d /tmp/kubelet-demo-XXXXXX)"
cgroup_root="kubelet-demo-$$"
cleanup() {
	scripts/testbed/stop.sh "$dir" || true
	for d in /sys/fs/cgroup/*/"$cgroup_root"; do
		[ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
	done
}
trap cleanup EXIT
scripts/testbed/start.sh "$dir"
cargo run --quiet --example cri_demo -- "unix://$dir/containerd.sock" "$dir/pod-logs" "$cgroup_root"
