#!/usr/bin/env bash
# Runs the official WASI testsuite through containerd and skiff's shim: each test is a `ctr run` of a
# container on runtime io.containerd.skiff.v1 (bench/wasi-testsuite/ctr-run.sh), on a private
# containerd (own root, state and socket under a temporary directory; no CRI plugin) started and
# stopped here. Needs root, containerd, ctr, the testsuite's `prod/testsuite-base` tree (not fetched
# here) and Python >= 3.12 with its runner's requirements.
# Usage: scripts/wasi-testsuite-shim.sh TESTSUITE_DIR [JSON_OUT]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUITE="$(realpath "${1:?usage: $0 TESTSUITE_DIR [JSON_OUT]}")"
JSON="${2:-$PWD/wasi-testsuite-shim.json}"
PYTHON="${PYTHON:-python3}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
(cd "$ROOT" && cargo build --release -p skiff-shim --bin containerd-shim-skiff-v1)
"$PYTHON" -m pip install -q -r "$SUITE/test-runner/requirements/common.txt"
work="$(mktemp -d /tmp/skiff-wasi-ctd.XXXXXX)"
mkdir -p "$work/bin"
ln -s "$TARGET/release/containerd-shim-skiff-v1" "$work/bin/containerd-shim-skiff-v1"
printf 'version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n' > "$work/config.toml"
PATH="$work/bin:$PATH" SKIFF_SHIM_CACHE="$work/cache" containerd --config "$work/config.toml" \
    --root "$work/root" --state "$work/state" --address "$work/containerd.sock" \
    > "$work/containerd.log" 2>&1 &
containerd_pid=$!
stop() {
    kill "$containerd_pid" 2>/dev/null || true
    wait "$containerd_pid" 2>/dev/null || true
    pkill -f "containerd-shim-skiff-v1 .*-address $work/containerd.sock" 2>/dev/null || true
    grep -q " $work/" /proc/self/mountinfo && awk -v w="$work/" '$5 ~ "^"w {print $5}' /proc/self/mountinfo \
        | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$work"
}
trap stop EXIT
for _ in $(seq 1 100); do
    ctr -a "$work/containerd.sock" version >/dev/null 2>&1 && break
    sleep 0.1
done
# A test that fails leaves its symlinks behind (the runner removes only files and directories).
find "$SUITE/tests" -name '*.cleanup' -exec rm -rf {} +
cd "$SUITE"
SKIFF_CTR_ADDRESS="$work/containerd.sock" "$PYTHON" run-tests \
    -r "$ROOT/bench/wasi-testsuite/skiff_shim.py" --disable-colors --json-output-location "$JSON"
