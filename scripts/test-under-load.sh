#!/usr/bin/env bash
# Runs the node test suite twice in a row while a busy loop holds each core, the way a
# shared CI machine or a developer's laptop runs it: tests must wait for facts, not time.
#   bash scripts/test-under-load.sh [runs, default 2]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-2}"
cores="$(nproc)"
hogs=()
for _ in $(seq 1 "$cores"); do
  node -e 'for (;;);' &
  hogs+=("$!")
done
trap 'kill "${hogs[@]}" 2>/dev/null || true' EXIT
failed=0
for run in $(seq 1 "$runs"); do
  echo "== run $run of $runs, $cores busy loops =="
  if ! node --test --test-concurrency=2 __test__/ 2>&1 | tee "/tmp/self-recycle-load-$run.log" | grep -E '^# (tests|pass|fail)'; then
    failed=1
  fi
  grep -E '^not ok' "/tmp/self-recycle-load-$run.log" || true
  if grep -qE '^# fail [1-9]' "/tmp/self-recycle-load-$run.log"; then failed=1; fi
done
exit "$failed"
