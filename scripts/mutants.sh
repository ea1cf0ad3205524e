#!/usr/bin/env bash
# Mutation testing of the pure decision modules (policy, units, config, the floor trend, and
# the monitor's admission, verdicts and throttle): cargo-mutants changes one thing at a time
# (a comparison, a constant, a returned value) and runs the Rust unit tests; a mutant the
# tests do not catch is a missing test, or an equivalent mutant excluded with its reason in
# .cargo/mutants.toml. The score is recorded in docs/ARCHITECTURE.md. Needs
# `cargo install cargo-mutants --locked` (crates.io). Extra arguments go to cargo-mutants
# (`-j 2`, `--list`).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-mutants >/dev/null || { echo "install it first: cargo install cargo-mutants --locked" >&2; exit 2; }
cargo mutants --no-shuffle --timeout 120 \
  --file src/policy.rs --file src/policy/hard_limit.rs --file src/policy/leak.rs \
  --file src/policy/near_heap.rs --file src/units.rs --file src/config.rs \
  --file src/config/machine.rs --file src/config/values.rs --file src/trend.rs \
  --file src/monitor/admission.rs --file src/monitor/verdicts.rs \
  --file src/monitor/throttle.rs \
  --output target/mutants "$@" -- --lib
