#!/usr/bin/env bash
# Runs one WASI testsuite test through containerd and skiff's shim, as `ctr run` would any container:
# the test's .wasm in a fresh rootfs, the test's root directory bind-mounted on `/` (it shadows the
# rootfs for the guest, as a mount does), its variables as the container's env, the host network,
# stdio and the exit code passed through.
# Usage: ctr-run.sh [--env K=V]... [--root DIR] [--serve PORT] -- TEST.wasm [ARGS...]
# Environment: SKIFF_CTR_ADDRESS (containerd's socket), SKIFF_CTR_NAMESPACE (default skiff-wasi).
set -euo pipefail
address="${SKIFF_CTR_ADDRESS:?set SKIFF_CTR_ADDRESS to the containerd socket}"
namespace="${SKIFF_CTR_NAMESPACE:-skiff-wasi}"
opts=()
root=""
serve=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --env) opts+=(--env "$2"); shift 2 ;;
        --root) root="$2"; shift 2 ;;
        --serve) serve="$2"; opts+=(--env "SKIFF_HTTP_PORT=$2"); shift 2 ;;
        --) shift; break ;;
        *) break ;;
    esac
done
wasm="${1:?usage: $0 [--env K=V]... [--root DIR] -- TEST.wasm [ARGS...]}"
shift
id="wasi-$$-${RANDOM}"
rootfs="$(mktemp -d)"
cleanup() {
    ctr -a "$address" -n "$namespace" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    ctr -a "$address" -n "$namespace" containers rm "$id" >/dev/null 2>&1 || true
    rm -rf "$rootfs"
}
trap cleanup EXIT
cp "$wasm" "$rootfs/test.wasm"
if [[ -n "$root" ]]; then
    opts+=(--mount "type=bind,src=$(realpath "$root"),dst=/,options=rbind:rw")
fi
# In the background (stdin passed on explicitly), so that a signal can stop the container first.
ctr -a "$address" -n "$namespace" run --rm --net-host --runtime io.containerd.skiff.v1 "${opts[@]}" \
    --rootfs "$rootfs" "$id" /test.wasm "$@" 0<&0 &
ctr_pid=$!
stop() {
    # As `wasmtime serve` on SIGINT/SIGTERM: the service stops, exit 0.
    ctr -a "$address" -n "$namespace" tasks kill -s SIGTERM "$id" >/dev/null 2>&1 || true
    wait "$ctr_pid" 2>/dev/null || true
    exit 0
}
trap stop INT TERM
if [[ -n "$serve" ]]; then
    # The shim serves a wasi:http component on SKIFF_HTTP_PORT; say so once it listens, as
    # `wasmtime serve` does.
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$serve") 2>/dev/null; then break; fi
        kill -0 "$ctr_pid" 2>/dev/null || break
        sleep 0.05
    done
    echo "Serving HTTP on http://127.0.0.1:$serve/" >&2
fi
set +e
wait "$ctr_pid"
exit $?
