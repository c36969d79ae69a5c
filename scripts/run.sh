#!/usr/bin/env bash
# The README's run command: a single-node cluster on the embedded defaults (API server + in-process node
# agent), a registry on loopback, and the sample app of Wasm pods. Needs root (pod network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo build --release -p skiff
./scripts/build-workloads.sh workloads/out
SKIFF="${CARGO_TARGET_DIR:-target}/release/skiff"
KUBECTL=/usr/lib/google-cloud-sdk/bin/kubectl.1.32
DATA="${SKIFF_DATA:-/tmp/skiff-demo}"
mkdir -p "$DATA/registry"

# A registry on 127.0.0.1:5000 (plain HTTP on loopback), unless one already answers there.
if ! curl -sf -o /dev/null http://127.0.0.1:5000/v2/; then
    printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:5000\n' \
        "$DATA/registry/data" >"$DATA/registry/config.yml"
    docker-registry serve "$DATA/registry/config.yml" >"$DATA/registry/log" 2>&1 &
    echo "registry pid $! on 127.0.0.1:5000"
    for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:5000/v2/ && break; sleep 0.1; done
fi
$SKIFF image push workloads/out/hello-http.wasm 127.0.0.1:5000/hello-http:1
$SKIFF image push workloads/out/hello.wasm 127.0.0.1:5000/hello:1
$SKIFF image push workloads/out/hello-http-p3.wasm 127.0.0.1:5000/hello-http-p3:1
# Linux containers beside Wasm: busybox built offline into the same registry, which the node
# mirrors docker.io to, so manifests keep `image: busybox`.
./scripts/busybox-image.sh 127.0.0.1:5000
printf 'mirrors:\n  docker.io:\n    endpoint: ["http://127.0.0.1:5000"]\n' >"$DATA/registries.yaml"

$SKIFF server --data-dir "$DATA" --registry-config "$DATA/registries.yaml" >"$DATA/server.log" 2>&1 &
echo "skiff server pid $!, log $DATA/server.log"
export KUBECONFIG="$DATA/kubeconfig"
for _ in $(seq 300); do [ -f "$DATA/kubeconfig" ] && $KUBECTL get node >/dev/null 2>&1 && break; sleep 0.1; done
$KUBECTL wait --for=condition=Ready node --all --timeout=60s
$KUBECTL apply -f workloads/manifests/app.yaml
$KUBECTL wait --for=condition=Ready pod/web -n shop --timeout=60s
$KUBECTL get pods -n shop -o wide
IP=$($KUBECTL get pod web -n shop -o jsonpath='{.status.podIP}')
echo "curl http://$IP:8080/ ->"; curl -s "http://$IP:8080/"
echo "curl http://$IP:8080/file/config/mode ->"; curl -s "http://$IP:8080/file/config/mode"; echo
$KUBECTL wait --for=jsonpath='{.status.phase}'=Succeeded pod/hello -n shop --timeout=60s
echo "kubectl logs hello -n shop ->"; $KUBECTL logs hello -n shop
# Services: the Service `web` of app.yaml got a ClusterIP; the node's nftables proxy serves it.
CIP=$($KUBECTL get svc web -n shop -o jsonpath='{.spec.clusterIP}')
echo "curl http://$CIP/ (Service web) ->"; curl -s --max-time 5 "http://$CIP/" || true
# A Deployment of the same component behind a NodePort (client-side dry runs keep reruns idempotent).
$KUBECTL create deployment api -n shop --image=127.0.0.1:5000/hello-http:1 --replicas=2 --port=8080 \
    --dry-run=client -o yaml | $KUBECTL apply -f -
$KUBECTL rollout status deployment/api -n shop --timeout=120s
$KUBECTL expose deployment api -n shop --port=80 --target-port=8080 --type=NodePort \
    --dry-run=client -o yaml | $KUBECTL apply -f -
NP=$($KUBECTL get svc api -n shop -o jsonpath='{.spec.ports[0].nodePort}')
$KUBECTL get deploy,svc,endpointslices -n shop -o wide
echo "curl http://127.0.0.1:$NP/ (NodePort of Deployment api) ->"; curl -s --max-time 5 "http://127.0.0.1:$NP/" || true
# A mixed pod: the Wasm component and a busybox sidecar sharing localhost and an emptyDir.
$KUBECTL apply -f workloads/manifests/mixed.yaml
$KUBECTL wait --for=condition=Ready pod/mixed -n shop --timeout=120s
$KUBECTL get pod mixed -n shop -o wide
for _ in $(seq 100); do $KUBECTL logs mixed -n shop -c fetcher 2>/dev/null | grep -q fetched && break; sleep 0.2; done
echo "kubectl logs mixed -c fetcher ->"; $KUBECTL logs mixed -n shop -c fetcher | tail -1
MIP=$($KUBECTL get pod mixed -n shop -o jsonpath='{.status.podIP}')
echo "curl http://$MIP:8080/file/shared/last (what the sidecar fetched, served by the Wasm component) ->"
curl -s --max-time 5 "http://$MIP:8080/file/shared/last" || true
# A WASI 0.3 (preview 3) HTTP service: an async `handle` whose body a guest task writes after it returned.
$KUBECTL run web3 -n shop --image=127.0.0.1:5000/hello-http-p3:1 --port=8080 --dry-run=client -o yaml | $KUBECTL apply -f -
$KUBECTL wait --for=condition=Ready pod/web3 -n shop --timeout=60s
P3IP=$($KUBECTL get pod web3 -n shop -o jsonpath='{.status.podIP}')
echo "curl http://$P3IP:8080/chunks/3 (a WASI 0.3 component) ->"; curl -s --max-time 5 "http://$P3IP:8080/chunks/3" || true
echo "export KUBECONFIG=$DATA/kubeconfig   # then use kubectl as usual; stop with: kill %1 (or pkill -f 'skiff server')"
