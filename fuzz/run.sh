#!/bin/sh
# Runs every cargo-fuzz target of the xenstore engine for a bounded time and fails on a crash.
#
#   fuzz/run.sh [SECONDS]        (default 30 s per target)
#
# Works on a fresh machine: installs cargo-fuzz if it is missing, and skips (exit 0) with a
# clear message when no nightly toolchain is available, because libFuzzer instrumentation
# (-Zsanitizer) needs nightly. Corpora: new inputs go to fuzz/corpus/<target> (not kept in
# git); the checked-in seeds in fuzz/seeds/<target> come from the engine's transcript tests
# (regenerate with XENSTORE_FUZZ_SEED_DIR=fuzz/seeds cargo test -p xenstore-engine
# --test transcripts --test malformed_input).
set -eu

SECONDS_PER_TARGET="${1:-30}"
case "$SECONDS_PER_TARGET" in
    ''|*[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac
FUZZ_DIR="$(cd "$(dirname "$0")" && pwd)"
cd "$FUZZ_DIR"

if ! command -v rustup >/dev/null 2>&1 || ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: SKIPPED - no nightly Rust toolchain (install one with 'rustup toolchain install nightly')."
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: installing cargo-fuzz from crates.io"
    cargo +nightly install cargo-fuzz --locked
fi

# Builds go to the fuzz crate's own target directory unless the caller chose one.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$FUZZ_DIR/target}"
TARGETS="wire_framing ring_reader engine_model engine_allocation_failures"
status=0
for target in $TARGETS; do
    mkdir -p "corpus/$target" "seeds/$target"
    echo "fuzz/run.sh: $target for ${SECONDS_PER_TARGET}s"
    log="$(mktemp)"
    if cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 >"$log" 2>&1; then
        runs="$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')"
        echo "fuzz/run.sh: $target passed (${runs:-?} executions)"
    else
        echo "fuzz/run.sh: $target FAILED; last lines of its log ($log):"
        tail -n 40 "$log"
        status=1
        continue
    fi
    rm -f "$log"
done
exit "$status"
