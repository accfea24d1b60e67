#!/bin/sh
# Runs every cargo-fuzz target of the xenstore engine for a bounded time and fails on a crash.
#
#   fuzz/run.sh [SECONDS]        (default 30 s per target)
#
# Works on a fresh machine: tests/lib/setup.sh installs a nightly toolchain with rust-src
# (libFuzzer's instrumentation, -Zsanitizer, needs nightly) and cargo-fuzz (built once into
# ~/.cache/xenstore-stubdom/cargo-fuzz). When either cannot be had, this fails: a fuzzing
# step that cannot fuzz is a failed step (issue 16). Each target's executions are printed.
# Corpora: new inputs go to fuzz/corpus/<target> (not kept in
# git); the checked-in seeds in fuzz/seeds/<target> come from the engine's transcript tests
# (regenerate with XENSTORE_FUZZ_SEED_DIR=fuzz/seeds cargo test -p xenstore-engine
# --test transcripts --test malformed_input --test migration_stream --test migration_c_stream).
set -eu

SECONDS_PER_TARGET="${1:-30}"
case "$SECONDS_PER_TARGET" in
    ''|*[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac
FUZZ_DIR="$(cd "$(dirname "$0")" && pwd)"
cd "$FUZZ_DIR"

if ! "$FUZZ_DIR/../tests/lib/setup.sh" --cargo-fuzz; then
    echo "fuzz/run.sh: FAILED - cannot set up nightly Rust and cargo-fuzz (tests/lib/setup.sh)" >&2
    exit 1
fi
PATH="${XENSTORE_CACHE_DIR:-$HOME/.cache/xenstore-stubdom}/cargo-fuzz/bin:$PATH"
export PATH
cargo +nightly fuzz --version

# Builds go to the fuzz crate's own target directory unless the caller chose one.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$FUZZ_DIR/target}"
TARGETS="wire_framing ring_reader engine_model engine_allocation_failures state_reader"
status=0
for target in $TARGETS; do
    mkdir -p "corpus/$target" "seeds/$target"
    echo "fuzz/run.sh: $target for ${SECONDS_PER_TARGET}s"
    log="$(mktemp)"
    if cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 >"$log" 2>&1; then
        runs="$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')"
        if [ "${runs:-0}" -gt 0 ] 2>/dev/null; then
            echo "fuzz/run.sh: $target passed ($runs executions)"
        else
            echo "fuzz/run.sh: $target FAILED: no executions counted; last lines of its log ($log):"
            tail -n 20 "$log"
            status=1
            continue
        fi
    else
        echo "fuzz/run.sh: $target FAILED; last lines of its log ($log):"
        tail -n 40 "$log"
        status=1
        continue
    fi
    rm -f "$log"
done
exit "$status"
