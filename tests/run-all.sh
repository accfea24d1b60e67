#!/usr/bin/env bash
# The whole test suite, runnable on a fresh Debian bookworm machine as root: it installs what
# it needs, then runs every check and ends with a line `N passed, M failed`.
#
#   tests/run-all.sh            everything (about 15-25 minutes on 2 cores)
#   tests/run-all.sh --quick    skip the Xen-in-QEMU boots, fuzzing and the benchmark
set -uo pipefail
cd "$(dirname "$0")/.."

quick=false
[ "${1:-}" = "--quick" ] && quick=true

tests/lib/setup.sh || exit 1

passed=0
failed=0
failures=()
step() {
    local name=$1
    shift
    echo
    echo "=== $name: $*"
    local started=$SECONDS
    if "$@"; then
        passed=$((passed + 1))
        echo "=== $name: PASS ($((SECONDS - started)) s)"
    else
        failed=$((failed + 1))
        failures+=("$name")
        echo "=== $name: FAIL ($((SECONDS - started)) s)"
    fi
}

step format cargo fmt --all -- --check
step clippy-host cargo clippy --workspace --all-targets -- -D warnings
step clippy-kernel cargo clippy --target x86_64-unknown-none -p xenstore-stubdom -- -D warnings
# The test image's code: the kernel with its test modes (cargo feature test-modes).
step clippy-kernel-test-modes cargo clippy --target x86_64-unknown-none -p xenstore-stubdom \
    --features test-modes -- -D warnings
step unit-and-integration-tests cargo test --workspace
step unit-tests-test-modes cargo test -p xenstore-stubdom --features test-modes
step kernel-image cargo build --release --target x86_64-unknown-none -p xenstore-stubdom
step kernel-notes tests/kernel/check-notes.sh target/x86_64-unknown-none/release/xenstore-stubdom
# The product image, and (built by the script itself) the test image for the crash paths.
step kernel-qemu-smoke tests/kernel/qemu-smoke.sh target/x86_64-unknown-none/release/xenstore-stubdom

# The nightly-only alternative build with the custom target spec: a counted step like any
# other (setup installs the nightly toolchain with rust-src; a failure there fails the step).
step nightly-setup tests/lib/setup.sh --nightly
step kernel-image-json-target cargo +nightly build --release -p xenstore-stubdom \
    --target x86_64-xen.json -Zjson-target-spec \
    -Zbuild-std=core,alloc,compiler_builtins -Zbuild-std-features=compiler-builtins-mem
step kernel-notes-json-target tests/kernel/check-notes.sh target/x86_64-xen/release/xenstore-stubdom
# The ring host (the serving logic of the stub and the daemon) under Miri: undefined
# behaviour in the engine's dependencies or in its use of them would show here.
step miri-setup tests/lib/setup.sh --miri
step miri-ring-host cargo +nightly miri test -p xenstore-engine --test ring_host
step real-clients tests/real-clients/run.sh
if ! $quick; then
    # Xen in QEMU: the kernel's self-test as a domU, then the stub domain as the host's
    # xenstore (dom0 clients and test-xenstore, guests' lifecycles, hostile guests, and the
    # README's main job). --kernel is the product image; run.sh builds the test image
    # (self-test, and the hostile guest of hostile-ring) itself.
    stub=target/x86_64-unknown-none/release/xenstore-stubdom
    step xen-in-qemu-stall-watch tests/xen-in-qemu/check-stall-watch.sh
    step xen-in-qemu-harness-check python3 tests/harness qemu-check
    # Debian bookworm's Xen 4.17 (the default): every scenario, 20 lifecycle rounds.
    for scenario in self-test stub-xenstore guest-lifecycle hostile-ring memory-exhaustion live-update main; do
        step "xen-in-qemu-$scenario" tests/xen-in-qemu/run.sh "$scenario" --kernel "$stub"
    done
    # Debian trixie's Xen 4.20 and the shared Xen 4.22.0 build: the stub suite, with 5
    # lifecycle rounds each (the 20-round memory-growth check runs on 4.17 above) to keep a
    # run under an hour on 2 cores; on 4.22 the stub must follow domains through
    # XEN_DOMCTL_get_domain_state (step domain-state-path) and the toolstack's xenstore
    # quota and feature settings are compared with C xenstored's (toolstack-4.22).
    for xen in 4.20 4.22; do
        for scenario in stub-xenstore guest-lifecycle hostile-ring main; do
            rounds=()
            [ "$scenario" = guest-lifecycle ] && rounds=(--set ROUNDS=5)
            step "xen-in-qemu-$xen-$scenario" tests/xen-in-qemu/run.sh "$scenario" --xen "$xen" \
                --kernel "$stub" "${rounds[@]}"
        done
    done
    # The live update on 4.22 too: the new image must follow domains through
    # XEN_DOMCTL_get_domain_state from where the old one left off.
    step xen-in-qemu-4.22-live-update tests/xen-in-qemu/run.sh live-update --xen 4.22 --kernel "$stub"
    for xenstore in c stub; do
        step "xen-in-qemu-4.22-xenstore-toolstack-$xenstore" tests/xen-in-qemu/run.sh xenstore-toolstack \
            --xen 4.22 --xenstore "$xenstore" --kernel "$stub"
    done
    step fuzz-smoke fuzz/run.sh 20
    step benchmark-quick bench/run.sh --quick
fi

echo
if [ ${#failures[@]} -gt 0 ]; then
    echo "failed steps: ${failures[*]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
