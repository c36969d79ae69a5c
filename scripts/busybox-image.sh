#!/usr/bin/env bash
# Builds a small busybox image offline (Debian's busybox-static, umoci) and pushes it to a registry
# as library/busybox:latest, so that `image: busybox` works on a box with no internet once the node
# mirrors docker.io to that registry (registries.yaml). usage: busybox-image.sh HOST:PORT
set -euo pipefail
REGISTRY="${1:?usage: busybox-image.sh HOST:PORT}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
TAG="$WORK/layout:busybox"
umoci init --layout "$WORK/layout"
umoci new --image "$TAG"
umoci unpack --rootless --image "$TAG" "$WORK/bundle"
ROOT="$WORK/bundle/rootfs"
mkdir -p "$ROOT/bin" "$ROOT/etc" "$ROOT/tmp"
cp /usr/bin/busybox "$ROOT/bin/busybox"
for applet in $("$ROOT/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$ROOT/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n' >"$ROOT/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' >"$ROOT/etc/group"
umoci repack --image "$TAG" "$WORK/bundle"
umoci config --image "$TAG" --config.cmd sh --config.env PATH=/bin
skopeo copy -q --dest-tls-verify=false "oci:$TAG" "docker://$REGISTRY/library/busybox:latest"
