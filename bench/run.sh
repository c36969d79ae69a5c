#!/usr/bin/env bash
# Builds the release binaries and runs every API-server benchmark, printing Markdown on stdout
# (progress on stderr). Each benchmark starts and stops its own server (and etcd).
#
#   bench/run.sh                            # build skiff + skiff-bench, run everything
#   SKIFF_BIN=/path/to/skiff bench/run.sh   # benchmark that server binary (builds skiff-bench only)
#
# Needs /usr/bin/etcd for the etcd rows. About 10 minutes on 2 cores, after the build.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${SKIFF_BIN:-}" ]; then
    cargo build --release -p skiff-bench >&2
    SERVER="$SKIFF_BIN"
else
    cargo build --release -p skiff -p skiff-bench >&2
    SERVER=./target/release/skiff
fi
BENCH=./target/release/skiff-bench

echo "#### Machine"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
if [ -n "${SKIFF_BIN:-}" ]; then
    echo "- server binary: $SERVER (sha256 $(sha256sum "$SERVER" | cut -c1-12)); harness from commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
else
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (working tree has uncommitted changes)')"
fi
echo "- nproc: $(nproc); CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "- memory: $(free -h | awk '/^Mem:/ {print $2 " total, " $7 " available"}')"
echo

run() {
    echo "#### skiff-bench $1"
    echo
    echo '```'
    echo "skiff-bench $*"
    echo '```'
    echo
    echo "Load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    "$BENCH" "$@" || echo "**This benchmark failed** (exit status $?); its error is on stderr."
    echo
}

run api-create --server-bin "$SERVER" --datastore sqlite --clients 1,16,64 --count 20000
run api-create --server-bin "$SERVER" --datastore etcd --clients 1,16,64 --count 20000
# Issue 17: the same creates authorized by RBAC (a service account bound to `edit`), and with the
# audit log on; the RBAC decision latency with 1,000 Roles and RoleBindings.
run api-create --server-bin "$SERVER" --datastore sqlite --clients 64 --count 20000 --as-service-account
run api-create --server-bin "$SERVER" --datastore sqlite --clients 64 --count 20000 --audit
# The API server alone (as issue 3 measured it, and as kube-apiserver runs): no in-process
# scheduler or controllers.
API_ONLY=(--server-arg=--disable-scheduler --server-arg=--disable-controller-manager)
run api-create --server-bin "$SERVER" --datastore sqlite --clients 64 --count 20000 "${API_ONLY[@]}"
run api-create --server-bin "$SERVER" --datastore sqlite --clients 64 --count 20000 --as-service-account "${API_ONLY[@]}"
run authz --roles 1000 --decisions 200000
run api-watch --server-bin "$SERVER" --watchers 100 --events 200
run api-watch --server-bin "$SERVER" --watchers 1000 --events 200
run api-list --server-bin "$SERVER" --pods 10000 --runs 5
run api-list --server-bin "$SERVER" --datastore etcd --pods 10000 --runs 5
run api-list --server-bin "$SERVER" --pods 100000 --runs 1
run api-rss --server-bin "$SERVER" --pods 100000
run api-rss --server-bin "$SERVER" --pods 100000 "${API_ONLY[@]}"
run api-rss --server-bin "$SERVER" --pods 100000 --watchers 1
# Issue 13: server memory under the controllers, 100 hollow nodes and 10,000 pods from Deployments.
run ctrl-rss --server-bin "$SERVER" --nodes 100 --pods 10000
