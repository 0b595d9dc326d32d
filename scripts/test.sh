#!/usr/bin/env bash
# The whole test suite, as the README says: installs what the tests need on a fresh Debian
# machine (nginx, Caddy, haproxy, Chromium, Redis; the npm packages oidc-provider and
# playwright-core), then runs formatting, lints, unit and integration tests, and the
# end-to-end suite.
set -euo pipefail
# Tests that need a server (redis, nginx) fail instead of skipping when it is missing.
export CI="${CI:-true}"
cd "$(dirname "$0")/.."

# procps: `kill`, with which tests/it/reload/sighup.rs sends SIGHUP to `tollgate serve`.
packages=(nginx caddy haproxy chromium redis-server openssl procps)
missing=()
for package in "${packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "== installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "== npm packages for the end-to-end suite"
(cd e2e && npm ci --no-audit --no-fund --loglevel=error)

echo "== formatting and lints"
cargo fmt --all --check
cargo clippy --locked --all-targets -- -D warnings

echo "== unit and integration tests"
cargo test --locked

echo "== fuzzing: every parser of attacker input, bounded in time"
FUZZ_SECONDS="${FUZZ_SECONDS:-30}" ./scripts/fuzz.sh

echo "== end to end: nginx, Caddy and haproxy in front of Tollgate (one and three replicas, Redis Cluster and Sentinel), oidc-provider, headless Chromium"
# `cargo test` has built target/debug/tollgate for the CLI tests (with the same features).
(cd e2e && E2E_TOLLGATE_BIN="$PWD/../target/debug/tollgate" npm test)
