#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ (tollgate::fuzz_targets) under libFuzzer for a bounded time
# each (FUZZ_SECONDS, default 60), starting from the corpus in fuzz/corpus/<target>. A crash
# fails the script and leaves the input in fuzz/artifacts/<target>/. New corpus entries the run
# finds are not kept (the committed corpus stays reviewable).
#
# libFuzzer needs the nightly toolchain (sanitizer flags). Without it, the same targets run on
# stable over the corpus and generated mutations (`cargo test --test it fuzz`, part of the
# normal suite); this script says which ran.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-60}"
targets=(jwt auth_query canonical_path path_readings redirect sealed_cookie config cookie_header compact_session)

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "== fuzzing: no nightly toolchain here; the targets ran on stable over the corpus"
    echo "   and generated mutations instead (tests/it/fuzz.rs, part of cargo test)"
    exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== fuzzing: installing cargo-fuzz"
    cargo install cargo-fuzz --locked --quiet
fi
echo "== fuzzing with libFuzzer (nightly), ${seconds}s per target: ${targets[*]}"
cargo +nightly fuzz build --sanitizer address --release
for target in "${targets[@]}"; do
    scratch="$(mktemp -d)"
    # The committed corpus is read; what the run adds goes to a scratch directory.
    status=0
    cargo +nightly fuzz run --sanitizer address --release "$target" "$scratch" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$scratch.log" 2>&1 || status=$?
    if [[ "$status" != 0 ]]; then
        tail -n 40 "$scratch.log"
        echo "fuzz target $target failed (exit $status); the input is in fuzz/artifacts/$target/"
        exit 1
    fi
    runs="$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$scratch.log" | grep -oE '[0-9]+$' || echo 0)"
    if [[ "$runs" -eq 0 ]]; then
        tail -n 40 "$scratch.log"
        echo "fuzz target $target ran no input"
        exit 1
    fi
    rm -rf "$scratch" "$scratch.log"
    echo "fuzz target $target: no crash in ${seconds}s ($runs inputs)"
done
