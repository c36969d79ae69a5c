#!/usr/bin/env bash
# The README's test command: installs what is missing, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo test --workspace --no-fail-fast 2>&1
# A short run of the fuzz harness (body decoding, patches, selectors): any crash fails CI.
./scripts/fuzz.sh 15
