#!/usr/bin/env bash
# Fuzzes every parser of outside input (fuzz/fuzz_targets/, the functions of src/input.rs)
# with libFuzzer through cargo fuzz, each for SECONDS (default 20: the bounded run of CI).
# The seeds in fuzz/corpus/ start each run; what the fuzzer finds goes to
# fuzz/target/corpus/ (kept between runs, not committed). A crash fails the run and leaves
# its input in fuzz/artifacts/<target>/.
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]
# The long run: bash scripts/fuzz.sh 3600   (an hour per target)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-20}
shift || true
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz@0.13.2
fi
# cargo fuzz passes flags the stable compiler accepts only as a bootstrap build; no
# sanitizer, since the crates here are safe Rust (a panic is what the fuzzer looks for).
export RUSTC_BOOTSTRAP=1
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi
cargo fuzz build --sanitizer none -O
for target in "${targets[@]}"; do
  mkdir -p "target/corpus/$target"
  echo "== fuzz $target (${seconds}s)"
  cargo fuzz run --sanitizer none -O "$target" "target/corpus/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -max_len=4096 -timeout=5 -print_final_stats=1 2>&1 |
    grep -E "^(stat::number_of_executed_units|stat::new_units_added|==|SUMMARY|Done)" || true
  if [ -n "$(ls -A "artifacts/$target" 2>/dev/null)" ]; then
    echo "fuzz: $target found a crash, see fuzz/artifacts/$target" >&2
    exit 1
  fi
done
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, no crash"
