#!/usr/bin/env bash
# Where the CPU of one `ctr run --rm` goes (issue 6): a private containerd with the given shim on its PATH,
# the hello guest as an image, N sequential `ctr run --rm` of it under `perf record -a`, then the share of
# the CPU samples per command name (ctr, containerd, the shim's threads, kernel threads) and the CPU
# milliseconds per run they stand for. Needs root, perf (linux-perf), containerd, ctr, umoci, skopeo.
#
#   bench/shim-cpu.sh SHIM_BINARY [RUNS]     # RUNS defaults to 30
set -euo pipefail
SHIM="$(realpath "$1")"; RUNS="${2:-30}"
cd "$(dirname "$0")/.."
command -v perf >/dev/null || apt-get install -y linux-perf >&2
scripts/build-workloads.sh "$PWD/workloads/out" >&2
DIR="$(mktemp -d /tmp/skiff-shimcpu.XXXXXX)"
cleanup() {
    pkill -f -- "--root $DIR/root" 2>/dev/null || true
    sleep 0.5
    pkill -9 -f -- "-address $DIR/c.sock" 2>/dev/null || true
    mount | awk -v d="$DIR" '$3 ~ "^"d {print $3}' | sort -r | xargs -r umount -l
    rm -rf "$DIR"
}
trap cleanup EXIT
mkdir -p "$DIR/bin" && cp "$SHIM" "$DIR/bin/containerd-shim-skiff-v1"
printf 'version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n' > "$DIR/config.toml"
PATH="$DIR/bin:$PATH" SKIFF_SHIM_CACHE="$DIR/cache" containerd --config "$DIR/config.toml" --root "$DIR/root" \
    --state "$DIR/state" --address "$DIR/c.sock" >"$DIR/containerd.log" 2>&1 &
CTR=(ctr -a "$DIR/c.sock" -n bench)
for _ in $(seq 50); do "${CTR[@]}" version >/dev/null 2>&1 && break; sleep 0.1; done
( cd "$DIR" && umoci init --layout img && umoci new --image img:latest && umoci unpack --rootless --image img:latest b \
  && cp "$OLDPWD/workloads/out/hello.wasm" b/rootfs/ && umoci repack --image img:latest b \
  && umoci config --image img:latest --config.entrypoint /hello.wasm \
  && skopeo copy "oci:img:latest" "oci-archive:$DIR/img.tar:skiff.bench/hello:1" ) >&2
"${CTR[@]}" images import "$DIR/img.tar" >&2
"${CTR[@]}" run --rm --runtime io.containerd.skiff.v1 skiff.bench/hello:1 warm >/dev/null   # fills the compile cache
perf record -q -a -F 1000 -o "$DIR/perf.data" -- bash -c \
    "for i in \$(seq $RUNS); do ${CTR[*]} run --rm --runtime io.containerd.skiff.v1 skiff.bench/hello:1 r\$i >/dev/null; done" 2>/dev/null
# At 1000 Hz on every CPU one sample is 1 ms of one CPU; "swapper" is the idle task.
echo "$RUNS runs; CPU per \`ctr run --rm\` by command name (perf comm, 15 characters):"
echo
echo "| command | CPU ms per run | share of busy CPU |"
echo "|---|---:|---:|"
perf script -i "$DIR/perf.data" -F comm 2>/dev/null | sed 's/^ *//' | sort | uniq -c | sort -rn | awk -v runs="$RUNS" '
    { n = $1; $1 = ""; sub(/^ /, ""); if ($0 != "swapper") { count[$0] = n; busy += n; names[++k] = $0 } }
    END { for (i = 1; i <= k; i++) if (count[names[i]] / runs >= 0.5)
              printf "| %s | %.1f | %.1f %% |\n", names[i], count[names[i]] / runs, 100 * count[names[i]] / busy
          printf "| **all busy CPU** | **%.1f** | 100 %% |\n", busy / runs }'
