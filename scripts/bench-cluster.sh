#!/usr/bin/env bash
# bench-cluster.sh: as root, measures the release kubelet in cluster mode on
# a private containerd and control plane (benches/cluster_pods.rs): 30 pods
# created through the API until they are seen Running, against a direct CRI
# driver (the runtime's floor), the kubelet's API requests per minute at
# steady state, and its RSS. Takes about 6 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/testbed/install.sh >/dev/null
cargo build --release --quiet --example kubelet
cargo bench --quiet --bench cluster_pods
