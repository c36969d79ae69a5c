#!/usr/bin/env bash
# Builds the release shim and harness, the Wasm guests, and runs the containerd shim benchmark (issue 6):
# skiff's shim against runc's on one private containerd. Markdown on stdout, progress on stderr.
#
#   bench/run-shim.sh                       # defaults: --runs 50 --tasks 200 --parallel 4 --containers 10
#   bench/run-shim.sh --runs 20 --tasks 50  # extra flags go to `skiff-bench shim-run`
#   SHIM_BIN=/path/to/containerd-shim-skiff-v1 bench/run-shim.sh   # benchmark that shim binary
#
# Needs root, containerd, ctr, runc, umoci, skopeo, busybox-static. A few minutes after the build.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-target}"
# The target directory may be shared with other checkouts that build the same crates (their binaries land
# on the same paths): copy ours away right after building, and check the harness is this checkout's.
BIN="$(mktemp -d "${TMPDIR:-/tmp}/skiff-shimbench-bin.XXXXXX")"
trap 'rm -rf "$BIN"' EXIT
for attempt in 1 2 3; do
    # Two builds: `--bin` would also filter skiff-bench's targets away.
    cargo build --release -p skiff-shim --bin containerd-shim-skiff-v1 >&2
    cargo build --release -p skiff-bench >&2
    cp "$TARGET/release/containerd-shim-skiff-v1" "$TARGET/release/skiff-bench" "$BIN/"
    if "$BIN/skiff-bench" shim-run --help >/dev/null 2>&1; then break; fi
    echo "run-shim.sh: the built skiff-bench has no shim-run (overwritten by another checkout?), attempt $attempt" >&2
    [ "$attempt" = 3 ] && exit 1
    touch bench/src/main.rs
done
scripts/build-workloads.sh "$PWD/workloads/out" >&2
SHIM="${SHIM_BIN:-$BIN/containerd-shim-skiff-v1}"
BENCH="$BIN/skiff-bench"

echo "#### Machine"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (working tree has uncommitted changes)')"
echo "- shim: $SHIM ($(stat -c %s "$SHIM") bytes, sha256 $(sha256sum "$SHIM" | cut -c1-12))"
echo "- nproc: $(nproc); CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); kernel $(uname -r)"
echo "- memory: $(free -h | awk '/^Mem:/ {print $2 " total, " $7 " available"}')"
echo "- $(containerd --version | cut -d' ' -f1,3); $(runc --version | head -1); $(ctr --version)"
echo "- load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo '```'
echo "skiff-bench shim-run --shim-bin $SHIM $*"
echo '```'
echo
status=0
"$BENCH" shim-run --shim-bin "$SHIM" "$@" || status=$?
echo "- load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
exit "$status"
