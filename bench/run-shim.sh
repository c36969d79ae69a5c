#!/usr/bin/env bash
# Builds the release shim and harness, the Wasm guests, and runs the containerd shim benchmark (issue 6):
# skiff's shim against runc's on one private containerd. Markdown on stdout, progress on stderr.
#
#   bench/run-shim.sh                       # defaults: --runs 50 --tasks 200 --parallel 4 --containers 10
#   bench/run-shim.sh --runs 20 --tasks 50  # extra flags go to `skiff-bench shim-run`
#
# Needs root, containerd, ctr, runc, umoci, skopeo, busybox-static. A few minutes after the build.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-target}"
cargo build --release -p skiff-shim --bin containerd-shim-skiff-v1 -p skiff-bench >&2
scripts/build-workloads.sh "$PWD/workloads/out" >&2
SHIM="$TARGET/release/containerd-shim-skiff-v1"
BENCH="$TARGET/release/skiff-bench"

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
