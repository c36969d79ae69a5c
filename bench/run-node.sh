#!/usr/bin/env bash
# Builds the release binaries and the Wasm guests, then runs the node-agent benchmarks, printing
# Markdown on stdout (progress on stderr). Each benchmark starts its own loopback registry and its
# own `skiff server` whose in-process node agent runs the pods on a private bridge, and stops them.
#
#   bench/run-node.sh                            # build skiff + skiff-bench + guests, run everything
#   SKIFF_BIN=/path/to/skiff bench/run-node.sh   # benchmark that server binary (builds skiff-bench only)
#   SERVER_LOGS=DIR bench/run-node.sh            # keep each server's log (SKIFF_LOG, default info) in DIR
#   KEEP_NEIGH=1 bench/run-node.sh               # leave the host's neighbour-table limits as they are
#
# 1,000 pods need about 2,000 entries in the kernel's neighbour (ARP) table, which all network
# namespaces share; Debian's default hard limit (net.ipv4.neigh.default.gc_thresh3) is 1,024, and
# beyond it new entries fail, pods stop being reachable (at about 511 pods) and even loopback
# connections of other programs can time out. So unless KEEP_NEIGH=1, this script raises
# gc_thresh1/2/3 to 4096/8192/16384 for the node-burst run and restores the old values afterwards.
#
# Needs root (bridges, network namespaces), the CNI plugins in /usr/lib/cni, docker-registry, wrk and
# kubectl 1.32 and 1.29 in /usr/lib/google-cloud-sdk/bin (port-forward); pod-start also needs containerd,
# runc, umoci, skopeo and busybox-static (Linux containers and the offline-built busybox image).
# About 3 minutes after the build.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-target}"
if [ -n "${SKIFF_BIN:-}" ]; then
    cargo build --release -p skiff-bench >&2
    SERVER="$SKIFF_BIN"
else
    cargo build --release -p skiff -p skiff-bench >&2
    SERVER="$TARGET/release/skiff"
fi
BENCH="$TARGET/release/skiff-bench"
scripts/build-workloads.sh >&2   # into workloads/out
WORKLOAD=workloads/out/hello-http.wasm

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
echo "- kernel: $(uname -r); wrk: $(dpkg-query -W -f '${Version}' wrk 2>/dev/null || echo unknown); CNI plugins: $(dpkg-query -W -f '${Version}' containernetworking-plugins 2>/dev/null || echo unknown)"
echo "- guest: $WORKLOAD ($(stat -c %s "$WORKLOAD") bytes, sha256 $(sha256sum "$WORKLOAD" | cut -c1-12))"
echo

if [ -n "${SERVER_LOGS:-}" ]; then
    mkdir -p "$SERVER_LOGS"
fi
run() {
    local name="$1"
    shift
    local log_args=()
    if [ -n "${SERVER_LOGS:-}" ]; then
        log_args=(--server-log "$SERVER_LOGS/$name.log")
    fi
    echo "#### skiff-bench $name"
    echo
    echo '```'
    echo "skiff-bench $name $*"
    echo '```'
    echo
    echo "Load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    "$BENCH" "$name" "$@" "${log_args[@]}" || echo "**This benchmark failed** (exit status $?); its error is on stderr."
    echo
}

NEIGH=/proc/sys/net/ipv4/neigh/default
OLD_NEIGH="$(cat $NEIGH/gc_thresh1) $(cat $NEIGH/gc_thresh2) $(cat $NEIGH/gc_thresh3)"
restore_neigh() {
    read -r t1 t2 t3 <<<"$OLD_NEIGH"
    echo "$t1" >$NEIGH/gc_thresh1; echo "$t2" >$NEIGH/gc_thresh2; echo "$t3" >$NEIGH/gc_thresh3
}
raise_neigh() {
    if [ -z "${KEEP_NEIGH:-}" ] && [ "$(cat $NEIGH/gc_thresh3)" -lt 16384 ]; then
        trap restore_neigh EXIT
        echo 4096 >$NEIGH/gc_thresh1; echo 8192 >$NEIGH/gc_thresh2; echo 16384 >$NEIGH/gc_thresh3
        echo "Neighbour table limits (gc_thresh1/2/3) raised from $OLD_NEIGH to 4096 8192 16384 for this run."
        echo
    fi
}

run node-start --server-bin "$SERVER" --workload "$WORKLOAD" --pods 200
run pod-start --server-bin "$SERVER" --workload "$WORKLOAD" --pods 50 --burst 20 --idle-pods 20
raise_neigh
run node-burst --server-bin "$SERVER" --workload "$WORKLOAD" --pods 1000 --clients 32
restore_neigh
run node-http --server-bin "$SERVER" --workload "$WORKLOAD" --seconds 10 --connections 64
run port-forward --server-bin "$SERVER" --workload "$WORKLOAD" --downloads 5
run port-forward --server-bin "$SERVER" --workload "$WORKLOAD" --downloads 5 --kubectl /usr/lib/google-cloud-sdk/bin/kubectl.1.29
