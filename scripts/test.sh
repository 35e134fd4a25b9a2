#!/usr/bin/env bash
# test.sh: the README's second command. Installs the containerd test bed
# (each end-to-end test starts and stops its own containerd from it), then
# runs every test of the workspace: unit, integration, doc and end-to-end.
# CI=true makes end-to-end tests fail, not skip, if the test bed is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/testbed/install.sh
export CI="${CI:-true}"
cargo test --workspace --all-features
