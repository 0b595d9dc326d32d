#!/usr/bin/env bash
# Regenerates the README's screenshots: runs the demo's browser test (e2e/demo.test.mjs), which
# drives `tollgate demo` in headless Chromium and saves each page, and copies the ones the
# README shows to docs/screenshots/. Needs what scripts/test.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked
(cd e2e && E2E_TOLLGATE_BIN="${CARGO_TARGET_DIR:-$PWD/../target}/debug/tollgate" node --test demo.test.mjs)
mkdir -p docs/screenshots
for page in login app signed-out; do
    cp "e2e/screenshots/$page.png" "docs/screenshots/$page.png"
done
echo "docs/screenshots/ updated"
