#!/usr/bin/env bash
# What one pod's CNI ADD costs as a node fills up (issue 13's 1,000-replica target): the `bridge`
# plugin (with `host-local` IPAM, the configuration the kubelet writes, on a private bridge and a
# /20) and the `loopback` plugin, run as the kubelet runs them for pods 1..PODS, each pod its own
# network namespace. At 0, STEP, 2*STEP, ... pods already on the bridge, the ADDs of the next 5 pods
# are timed with `perf stat` (task-clock: CPU time of the plugin and the plugins it runs) and one
# Markdown row gives their median; the other pods' ADDs just run. Needs root, perf (linux-perf) and
# the CNI plugins in /usr/lib/cni. Everything it made is removed on exit.
#
#   bench/cni-add-cost.sh [PODS] [STEP]     # defaults: 1000 pods, a row every 100
set -euo pipefail
PODS="${1:-1000}"; STEP="${2:-100}"
command -v perf >/dev/null || apt-get install -y linux-perf >&2
CNI=/usr/lib/cni
TAG="cc$$"
DIR="$(mktemp -d /tmp/skiff-cnicost.XXXXXX)"
cleanup() {
    for ns in $(ip netns list | awk -v t="$TAG-" 'index($1, t) == 1 {print $1}'); do ip netns del "$ns"; done
    ip link del "$TAG" 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT
cat > "$DIR/bridge.json" <<EOF
{"cniVersion":"1.0.0","name":"$TAG","type":"bridge","bridge":"$TAG","isGateway":true,"ipMasq":false,
 "hairpinMode":true,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.251.0.0/20","gateway":"10.251.0.1"}]],
 "routes":[{"dst":"10.252.0.0/16"}],"dataDir":"$DIR/ipam"}}
EOF
echo '{"cniVersion":"1.0.0","name":"lo","type":"loopback"}' > "$DIR/loopback.json"

# Runs one plugin for pod $2; with $3 = timed, prints its task-clock in ms.
add() {
    local plugin="$1" n="$2" timed="$3" conf ifname
    if [ "$plugin" = loopback ]; then conf="$DIR/loopback.json"; ifname=lo; else conf="$DIR/bridge.json"; ifname=eth0; fi
    local env=(env CNI_COMMAND=ADD CNI_CONTAINERID="$TAG-$n" CNI_NETNS="/var/run/netns/$TAG-$n"
               CNI_IFNAME="$ifname" CNI_PATH="$CNI" "$CNI/$plugin")
    if [ -z "$timed" ]; then "${env[@]}" < "$conf" > /dev/null; return; fi
    perf stat -x, -e task-clock -o "$DIR/stat" "${env[@]}" < "$conf" > /dev/null
    awk -F, '$3 == "task-clock" {printf "%.1f", $1}' "$DIR/stat"
}

SAMPLES=5
median() { sort -n | awk '{v[NR] = $1} END {printf "%.1f", v[int((NR + 1) / 2)]}'; }
echo "| pods on the bridge before | bridge + host-local CPU (ms), median of $SAMPLES | loopback CPU (ms) |"
echo "|---:|---:|---:|"
: > "$DIR/bridge.ms"; : > "$DIR/loopback.ms"
for n in $(seq 1 "$PODS"); do
    ip netns add "$TAG-$n"
    if [ $(((n - 1) % STEP)) -lt "$SAMPLES" ]; then
        add bridge "$n" timed >> "$DIR/bridge.ms"; echo >> "$DIR/bridge.ms"
        add loopback "$n" timed >> "$DIR/loopback.ms"; echo >> "$DIR/loopback.ms"
        if [ $(((n - 1) % STEP)) -eq $((SAMPLES - 1)) ]; then
            echo "| $((n - SAMPLES)) | $(median < "$DIR/bridge.ms") | $(median < "$DIR/loopback.ms") |"
            : > "$DIR/bridge.ms"; : > "$DIR/loopback.ms"
        fi
    else
        add bridge "$n" ""
        add loopback "$n" ""
    fi
done
