#!/usr/bin/env bash
# Builds the Wasm guest programs in workloads/ (release) and copies <name>.wasm into OUT_DIR
# (default workloads/out). wasip1 crates become core modules, wasip2 crates components.
# Usage: scripts/build-workloads.sh [OUT_DIR]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORKLOADS="$ROOT/workloads"
OUT_DIR="${1:-$WORKLOADS/out}"
# A relative OUT_DIR is relative to where the script was called from (it cds into workloads/ below).
case "$OUT_DIR" in /*) ;; *) OUT_DIR="$PWD/$OUT_DIR" ;; esac
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/workloads}"
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$WORKLOADS/target}"

P1_CRATES=(hello crasher busy-loop memory-hog tool slow-starter)
P2_BINS=(hello-p2 tcp-echo)
P2_LIBS=(hello-http hello-p3 hello-http-p3)

installed="$(rustup target list --installed 2>/dev/null || true)"
for target in wasm32-wasip1 wasm32-wasip2; do
    if ! grep -qx "$target" <<<"$installed"; then
        rustup target add "$target" || true
    fi
done

pkg_args() { local p; for p in "$@"; do printf -- '-p\n%s\n' "$p"; done; }

cd "$WORKLOADS"
mapfile -t p1 < <(pkg_args "${P1_CRATES[@]}")
mapfile -t p2 < <(pkg_args "${P2_BINS[@]}" "${P2_LIBS[@]}")
cargo build --release --locked --target wasm32-wasip1 "${p1[@]}"
cargo build --release --locked --target wasm32-wasip2 "${p2[@]}"

mkdir -p "$OUT_DIR"
# Copies $1 to $OUT_DIR/$2 unless an identical file is already there.
publish() {
    local src="$1" dst="$OUT_DIR/$2"
    if ! cmp -s "$src" "$dst"; then
        cp "$src" "$dst.tmp"
        mv -f "$dst.tmp" "$dst"
        echo "wrote $dst"
    fi
}
for c in "${P1_CRATES[@]}"; do
    publish "$CARGO_TARGET_DIR/wasm32-wasip1/release/$c.wasm" "$c.wasm"
done
for c in "${P2_BINS[@]}"; do
    publish "$CARGO_TARGET_DIR/wasm32-wasip2/release/$c.wasm" "$c.wasm"
done
for c in "${P2_LIBS[@]}"; do
    publish "$CARGO_TARGET_DIR/wasm32-wasip2/release/${c//-/_}.wasm" "$c.wasm"
done
echo "workloads in $OUT_DIR"
