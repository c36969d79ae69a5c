#!/usr/bin/env bash
# Runs the official WASI testsuite (its prebuilt tests: Rust p1 and p3, C p1, AssemblyScript p1) on
# skiff's engine through skiff-wasi-run. Needs the testsuite's `prod/testsuite-base` tree (it is not
# fetched here: CI has no network) and Python >= 3.12 with its runner's requirements.
# Usage: scripts/wasi-testsuite.sh TESTSUITE_DIR [JSON_OUT]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUITE="${1:?usage: $0 TESTSUITE_DIR [JSON_OUT]}"
JSON="${2:-$PWD/wasi-testsuite.json}"
PYTHON="${PYTHON:-python3}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
(cd "$ROOT" && cargo build --release -p skiff-bench --bin skiff-wasi-run)
"$PYTHON" -m pip install -q -r "$SUITE/test-runner/requirements/common.txt"
# A test that fails leaves its symlinks behind (the runner removes only files and directories).
find "$SUITE/tests" -name '*.cleanup' -exec rm -rf {} +
cd "$SUITE"
SKIFF_WASI_RUN="$TARGET/release/skiff-wasi-run" "$PYTHON" run-tests \
    -r "$ROOT/bench/wasi-testsuite/skiff.py" --disable-colors --json-output-location "$JSON"
