#!/usr/bin/env bash
# Runs every cargo-fuzz target for N seconds each (default 60) and prints the
# executions and any crash per target. Exit status non-zero if a target crashed.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# Installs cargo-fuzz when it is missing (scripts/deps.sh fuzz); works on the
# stable toolchain through RUSTC_BOOTSTRAP=1 (cargo-fuzz uses -Z sanitizer flags).
set -euo pipefail
"$(dirname "$0")/deps.sh" fuzz
secs=${1:-60}
shift || true
cd "$(dirname "$0")/../fuzz"
export RUSTC_BOOTSTRAP=1
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi
cargo fuzz build -O
failed=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  log=$(mktemp)
  if cargo fuzz run -O "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
    echo "fuzz $t: ok, ${execs:-?} executions in ${secs}s"
  else
    echo "fuzz $t: FAILED"
    tail -40 "$log"
    failed=1
  fi
  rm -f "$log"
done
exit $failed
