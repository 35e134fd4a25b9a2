#!/usr/bin/env bash
# soak.sh: the fault soak on real parts (issue 18, part 3). As root, after
# the README's set-up commands:
#
#   scripts/soak.sh                       # 30 minutes on a release build
#   SOAK_SECONDS=600 scripts/soak.sh      # 10 minutes
#
# It runs the integration test `tests/soak.rs` (`cargo test --test soak`):
# the example kubelet, as a child process, on a private containerd of the
# test bed, while static pod manifests come and go at about 3 pods/s (some
# crash-looping, some OOMing, the rest sleeping), containerd is SIGKILLed and
# started again every 2-4 minutes and the kubelet every 3-5 minutes. Every
# minute and at the end it checks that pods that are gone leave no sandbox,
# container, pod cgroup, mount, pod directory or log directory behind, that
# every pod's status on the node API's /pods matches the CRI, and it samples
# the kubelet's RSS (the trend after warm-up must stay under 1 MiB/min).
# The test's doc comment says exactly what is checked and with what bounds.
#
# It prints the summary and leaves in $SOAK_OUT (default target/soak):
# summary.txt, events.log (the timeline: every pod, kill, restart and
# check), checks.tsv, rss.tsv, kubelet.log and containerd.log. It exits
# non-zero when the soak found a leak, a status mismatch, a kubelet exit it
# did not cause, or a growing RSS.
#
# Environment (all optional):
#   SOAK_SECONDS                 churn duration (1800 here; the test's own
#                                default, 90, is the CI variant that
#                                `cargo test --workspace` runs)
#   SOAK_PODS_PER_SECOND         pod creations (and deletions) per second (3)
#   SOAK_MAX_PODS                most pods at once (60)
#   SOAK_CONTAINERD_KILL_EVERY   MIN-MAX seconds between containerd kills (120-240)
#   SOAK_KUBELET_KILL_EVERY      MIN-MAX seconds between kubelet kills (180-300)
#   SOAK_CHECK_EVERY             seconds between checks (60)
#   SOAK_RSS_WARMUP              seconds of each kubelet run left out of the RSS fit (60)
#   SOAK_RSS_MAX_SLOPE           the RSS trend that fails, MiB/min (1)
#   SOAK_SEED                    the random choices' seed (printed in the summary)
#   SOAK_OUT                     where the figures and logs go
#   SOAK_PROFILE                 release (default) or debug
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/testbed/install.sh
export SOAK_SECONDS="${SOAK_SECONDS:-1800}"
export SOAK_OUT="${SOAK_OUT:-${CARGO_TARGET_DIR:-target}/soak}"
# The test runs in the package's folder: make the path absolute.
case "$SOAK_OUT" in /*) ;; *) SOAK_OUT="$PWD/$SOAK_OUT" ;; esac
# A missing test bed fails the soak instead of skipping it.
export CI="${CI:-true}"
profile=()
case "${SOAK_PROFILE:-release}" in
release) profile=(--release) ;;
debug) ;;
*) echo "SOAK_PROFILE must be release or debug" >&2; exit 2 ;;
esac

# `cargo test --test soak` alone does not build the example the test runs.
cargo build "${profile[@]}" --example kubelet
echo "soak: ${SOAK_SECONDS} s; figures and logs in $SOAK_OUT"
status=0
cargo test "${profile[@]}" --test soak -- --nocapture || status=$?
if [ -f "$SOAK_OUT/summary.txt" ]; then
	echo "== $SOAK_OUT/summary.txt"
	cat "$SOAK_OUT/summary.txt"
fi
exit "$status"
