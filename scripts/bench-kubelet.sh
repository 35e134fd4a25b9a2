#!/usr/bin/env bash
# bench-kubelet.sh: as root, measures pod start-up through the release
# kubelet against a direct CRI driver (the runtime's floor) for 1, 10 and 50
# pods on a private containerd, and the kubelet's RSS (benches/kubelet_startup.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/testbed/install.sh >/dev/null
cargo build --release --quiet --example kubelet
cargo bench --quiet --bench kubelet_startup
