#!/usr/bin/env bash
# usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Builds the cargo-fuzz harness in fuzz/ (request body decoding, the patch types, selectors; see
# control/src/fuzzing.rs) and runs every target (or the named ones) for SECONDS_PER_TARGET
# (default 60) on a scratch copy of its committed corpus and kept regressions, so the committed
# corpus never grows. Exits non-zero if any target crashes, naming the reproducer.
#
# Build settings: no sanitizer (the code under test is safe Rust; AddressSanitizer would cost
# a slower build and about half the executions per second for checks safe code does not need),
# optimized (opt-level 1 and 16 codegen units, see fuzz/Cargo.toml: a short build matters more
# than peak speed) with debug assertions on, so integer overflow panics as in a test build.
# The build goes to ${CARGO_TARGET_DIR:-target}/fuzz, outside the clone in CI, and is reused.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-60}"
shift || true
[[ "$secs" =~ ^[0-9]+$ ]] || { echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2; exit 2; }

CARGO_FUZZ_VERSION=0.13.2
export PATH="$HOME/.cargo/bin:$PATH"
if ! cargo fuzz --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION" >&2
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz: installing the nightly toolchain (libFuzzer's coverage flags need it)" >&2
  rustup toolchain install nightly --profile minimal
fi

target_dir="${CARGO_TARGET_DIR:-$PWD/target}/fuzz"
build=(--sanitizer none --release --debug-assertions --codegen-units 16 --target-dir "$target_dir")
started=$(date +%s)
cargo +nightly fuzz build "${build[@]}"
echo "fuzz: build took $(( $(date +%s) - started ))s (target dir $target_dir)" >&2

triple="$(rustup run nightly rustc -vV | sed -n 's/^host: //p')"
bin_dir="$target_dir/$triple/release"
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

scratch="$(mktemp -d "${TMPDIR:-/tmp}/skiff-fuzz.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
artifacts="$PWD/fuzz/artifacts/$(date -u +%Y%m%dT%H%M%SZ)"
failed=()
for t in "${targets[@]}"; do
  corpus="$scratch/corpus/$t"
  mkdir -p "$corpus" "$artifacts/$t"
  for seeds in "fuzz/corpus/$t" "fuzz/regressions/$t"; do
    if [ -d "$seeds" ]; then cp -r "$seeds/." "$corpus/"; fi
  done
  dict=()
  case "$t" in
    *selector) dict=(-dict=fuzz/dict/selector.dict) ;;
    decode_protobuf) ;;
    *) dict=(-dict=fuzz/dict/json.dict) ;;
  esac
  echo "fuzz: $t for ${secs}s" >&2
  if "$bin_dir/$t" "$corpus" "${dict[@]}" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$artifacts/$t/" -print_final_stats=1 >"$scratch/$t.log" 2>&1; then
    grep -E '^stat::number_of_executed_units' "$scratch/$t.log" | sed "s/^/fuzz: $t /" >&2 || true
  else
    tail -n 40 "$scratch/$t.log" >&2
    failed+=("$t")
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  for t in "${failed[@]}"; do
    for crash in "$artifacts/$t"/*; do
      [ -e "$crash" ] || continue
      echo "fuzz: $t crashed; reproducer: $crash" >&2
      echo "fuzz:   replay: $bin_dir/$t $crash   (fix it, then keep it: cp $crash fuzz/regressions/$t/)" >&2
    done
  done
  exit 1
fi
echo "fuzz: ${#targets[@]} targets ran ${secs}s each without a crash" >&2
