#!/usr/bin/env bash
# Mutation testing of the decision modules (policy, units, config): cargo-mutants changes
# one thing at a time (a comparison, a constant, a returned value) and runs the Rust tests;
# a mutant the tests do not catch is a missing test. The score is recorded in
# docs/ARCHITECTURE.md. Needs `cargo install cargo-mutants` (crates.io); ~5 min here with -j 2.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-mutants >/dev/null || { echo "install it first: cargo install cargo-mutants --locked" >&2; exit 2; }
cargo mutants --no-shuffle --timeout 120 \
  --file src/policy.rs --file src/policy/hard_limit.rs --file src/policy/leak.rs \
  --file src/policy/near_heap.rs --file src/units.rs --file src/config.rs \
  --file src/config/machine.rs --file src/config/values.rs \
  --output target/mutants "$@"
