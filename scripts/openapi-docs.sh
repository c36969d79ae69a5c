#!/usr/bin/env bash
# Measures the OpenAPI documents of a fresh `skiff server` (control plane only, SQLite): size and
# time of the first (building) and second (cached) request of /openapi/v2 (JSON and protobuf)
# and of every /openapi/v3 group-version document, and the server's RSS before and after.
# Usage: scripts/openapi-docs.sh [SKIFF_BIN] [PORT]   (default target/debug/skiff, 17650)
set -euo pipefail

BIN="${1:-target/debug/skiff}"
PORT="${2:-17650}"
DIR="$(mktemp -d)"
"$BIN" server --data-dir "$DIR" --listen "127.0.0.1:$PORT" --datastore sqlite --no-agent >"$DIR/log" 2>&1 &
PID=$!
trap 'kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 1 300); do
  [ -f "$DIR/admin.token" ] && curl -sk "https://127.0.0.1:$PORT/readyz" | grep -qx ok && break
  sleep 0.1
done
sleep 2
TOKEN="$(cat "$DIR/admin.token")"
get() { # path accept -> "bytes seconds"
  curl -sk -o /dev/null -w '%{size_download} %{time_total}' -H "Authorization: Bearer $TOKEN" -H "Accept: $2" \
    "https://127.0.0.1:$PORT$1"
}
rss() { awk '/^Rss:/ {r=$2} /^LazyFree:/ {l=$2} END {printf "%.1f MB (%.1f MB of it lazily freed)", r / 1024, l / 1024}' "/proc/$PID/smaps_rollup"; }
echo "idle RSS: $(rss)"
PB='application/com.github.proto-openapi.spec.v2@v1.0+protobuf'
for accept in application/json "$PB"; do
  echo "/openapi/v2 ($accept): first $(get /openapi/v2 "$accept"), cached $(get /openapi/v2 "$accept")"
done
urls="$(curl -sk -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$PORT/openapi/v3" |
  grep -o '"/openapi/v3/[^"]*"' | tr -d '"')"
first=0; cached=0; bytes=0; n=0
for url in $urls; do
  read -r b t <<<"$(get "$url" application/json)"
  read -r _ t2 <<<"$(get "$url" application/json)"
  bytes=$((bytes + b)); n=$((n + 1))
  first="$(echo "$first + $t" | bc)"; cached="$(echo "$cached + $t2" | bc)"
done
echo "/openapi/v3: $n documents, $bytes bytes; first requests ${first}s in all, cached ${cached}s"
echo "RSS after: $(rss)"; 
