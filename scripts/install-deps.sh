#!/usr/bin/env bash
# Installs what skiff's build, tests and benchmarks need on a fresh Debian 12 machine.
# Idempotent; needs root (apt-get) and reaches only Debian's packages, crates.io and PyPI.
set -euo pipefail

packages=(
  protobuf-compiler      # gRPC clients (etcd, containerd)
  etcd-server etcd-client # the HA store backend, tested for real
  curl ca-certificates openssl nftables
  containerd runc containernetworking-plugins docker-registry skopeo umoci busybox-static iproute2 wrk
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The Debian etcd package starts a system etcd on the default ports; tests use their own.
systemctl disable --now etcd >/dev/null 2>&1 || true

# The official Python client, for the second-client end-to-end test.
python3 -c 'import kubernetes' 2>/dev/null || python3 -m pip install -q kubernetes
# ... and on Python 3.13 (pyenv), whose default TLS context verifies strictly (tests/hardening.rs).
if command -v pyenv >/dev/null; then
  py313="$(pyenv root)/versions/3.13.0/bin/python3"
  if [ -x "$py313" ]; then
    "$py313" -c 'import kubernetes' 2>/dev/null || "$py313" -m pip install -q kubernetes
  fi
fi

# Wasm guest targets (workloads/).
if command -v rustup >/dev/null; then
  rustup target add wasm32-wasip1 wasm32-wasip2 >/dev/null 2>&1 || true
fi

# kubectl ships on the machine image (/usr/lib/google-cloud-sdk/bin/kubectl.1.32); say so if not.
[ -x /usr/lib/google-cloud-sdk/bin/kubectl.1.32 ] || echo "warning: kubectl 1.32 not found at /usr/lib/google-cloud-sdk/bin/kubectl.1.32" >&2

# Bridge netfilter: replies between pods on one bridge must pass the service proxy's NAT (as
# kube-proxy and k3s need it too).
modprobe br_netfilter 2>/dev/null || echo "warning: could not load br_netfilter (pod-to-Service traffic on one node needs it)" >&2
