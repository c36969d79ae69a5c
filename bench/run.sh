#!/usr/bin/env bash
# Builds the release binaries and runs every API-server benchmark, printing Markdown on stdout
# (progress on stderr). Each benchmark starts and stops its own server (and etcd).
#
#   bench/run.sh                 # everything, the figures in docs/benchmarks.md
#   SKIFF_BIN=/path/to/skiff bench/run.sh   # benchmark another server binary
#
# Needs /usr/bin/etcd for the etcd rows. Takes about 10-20 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p skiff -p skiff-bench >&2
BENCH=./target/release/skiff-bench
SERVER="${SKIFF_BIN:-./target/release/skiff}"

echo "## Machine"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
echo "- nproc: $(nproc)"
echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "- memory: $(free -h | awk '/^Mem:/ {print $2 " total, " $7 " available"}')"
echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

run() {
    echo "### $*"
    echo
    echo '```'
    echo "skiff-bench $*"
    echo '```'
    echo
    "$BENCH" "$@"
    echo
}

run api-create --server-bin "$SERVER" --datastore sqlite --clients 1,16,64 --count 2000
run api-create --server-bin "$SERVER" --datastore etcd --clients 1,16,64 --count 2000
run api-watch --server-bin "$SERVER" --watchers 1000 --events 200
run api-list --server-bin "$SERVER" --pods 10000
run api-rss --server-bin "$SERVER" --pods 100000
