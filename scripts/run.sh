#!/usr/bin/env bash
# The README's run command: a single-node cluster on the embedded defaults, and a sample app.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo build --release -p skiff
DATA="${SKIFF_DATA:-/tmp/skiff-demo}"
mkdir -p "$DATA"
./target/release/skiff server --data-dir "$DATA" >"$DATA/server.log" 2>&1 &
echo "skiff server pid $!, log $DATA/server.log"
for _ in $(seq 100); do [ -f "$DATA/kubeconfig" ] && curl -sk https://127.0.0.1:6443/readyz | grep -q ok && break; sleep 0.1; done
export KUBECONFIG="$DATA/kubeconfig"
KUBECTL=/usr/lib/google-cloud-sdk/bin/kubectl.1.32
$KUBECTL apply -f workloads/manifests/app.yaml
$KUBECTL get all -n shop
echo "export KUBECONFIG=$DATA/kubeconfig   # then use kubectl as usual"
