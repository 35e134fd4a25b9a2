#!/usr/bin/env bash
# bench-vs-upstream.sh: as root, measures this project's kubelet against
# upstream's kubelet v1.35.4 side by side (benches/vs_upstream.rs): one
# private containerd, the same static pods (busybox sleep), an equivalent
# configuration, the two kubelets one after the other (never both at once:
# each kills the runtime pods it does not know), alternating over ROUNDS.
#
#   scripts/bench-vs-upstream.sh                  # 3 rounds, 10/50/100 pods, 60 s windows (~40 min)
#   ROUNDS=2 PODS=10,50 scripts/bench-vs-upstream.sh
#   DENSITY=250 scripts/bench-vs-upstream.sh      # and 250 pods per kubelet once, at the end
#   SHORT=1 scripts/bench-vs-upstream.sh          # the CI mode: 10 pods, one round, 10 s windows
#
# Settings (environment): ROUNDS (3), PODS (10,50,100), WINDOW (60: the
# steady-state window, s), SETTLE (10: from start or all Running to the
# window, s), EXITS (5: container exits timed per round), DENSITY (0: off),
# REPORT_DIR ($CARGO_TARGET_DIR/vs-upstream: summary.md, samples.tsv and the
# kubelets' logs). SHORT=1 sets ROUNDS=1 PODS=10 WINDOW=10 SETTLE=3 EXITS=2
# DENSITY=0 (what is set explicitly wins). KUBELET_PROFILE (release) is the
# Cargo profile our kubelet is built with: `dist` measures the deployable
# binary (Cargo.toml), at 11 minutes or more of build.
#
# It installs the test bed (scripts/testbed/install.sh: containerd, images,
# and upstream's kubelet, built once from the Go module proxy by
# build-controlplane.sh and cached under $TESTBED_HOME), builds our kubelet
# in release mode and runs `cargo bench --bench vs_upstream`. It exits
# non-zero only when a kubelet cannot run (does not start, or its pods do
# not run or stop within generous hang guards): never on a timing.
#
# Take the machine's heavy lock around it where one exists (it runs
# hundreds of containers): `flock /path/to/heavy.lock scripts/bench-vs-upstream.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${SHORT:-}" ] && [ "${SHORT}" != 0 ]; then
	export ROUNDS="${ROUNDS:-1}" PODS="${PODS:-10}" WINDOW="${WINDOW:-10}" SETTLE="${SETTLE:-3}"
	export EXITS="${EXITS:-2}" DENSITY="${DENSITY:-0}"
fi

scripts/testbed/install.sh >/dev/null
scripts/testbed/build-controlplane.sh >/dev/null
profile="${KUBELET_PROFILE:-release}"
cargo build --profile "$profile" --quiet --example kubelet
export KUBELET_BIN="${CARGO_TARGET_DIR:-$PWD/target}/$profile/examples/kubelet"
cargo bench --quiet --bench vs_upstream
