#!/usr/bin/env bash
# Fuzzes every target for a fixed time, on the stable toolchain (cargo-fuzz with
# `--sanitizer none`: libFuzzer's coverage guidance, panics and aborts are found; no
# AddressSanitizer, which needs nightly). The corpus starts from fuzz/seeds (URL paths
# from the test suites, API bodies, presigned queries) and the repository's test images.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]      # default 60 s, every target
#
# A crash stops the run with the input saved in fuzz/artifacts/<target>/; replay it with
# `cargo fuzz run --sanitizer none <target> <file>` and add it to the tests.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(url probe render api presign)

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2

# Corpus directories from the committed seeds (idempotent; found inputs are kept).
mkdir -p corpus/url corpus/probe corpus/render corpus/api corpus/presign
n=0
while IFS= read -r line; do
  n=$((n + 1)); printf '%s' "$line" > "corpus/url/seed-$n"
done < seeds/url.txt
n=0
while IFS= read -r line; do
  n=$((n + 1)); printf '%s' "$line" > "corpus/presign/seed-$n"
done < seeds/presign.txt
cp seeds/api/* corpus/api/
n=0
for image in ../fixtures/*.* ../conformance/images/*.*; do
  [ "$(stat -c %s "$image")" -le 200000 ] || continue
  n=$((n + 1))
  name="$(basename "$image")"
  cp "$image" "corpus/probe/$name"
  # render: the first byte picks the recipe and output format.
  { printf "\\x$(printf %02x $((n * 37 % 256)))"; cat "$image"; } > "corpus/render/$name"
done

cargo fuzz build --sanitizer none
for target in "${targets[@]}"; do
  echo "== fuzzing $target for ${seconds}s"
  cargo fuzz run --sanitizer none "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=20 -max_len=262144 -print_final_stats=1
done
