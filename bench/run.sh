#!/usr/bin/env bash
# Runs the benchmark suite: our xenstored, Debian bookworm's C xenstored and oxenstored (Xen 4.17,
# under bench/shim/fake-xen.c) through every workload; prints the table, the ratios and the goals
# (docs/performance.md, "Goals"), and writes target/bench/results.csv and target/bench/scaling.svg.
# Then stub-heap measures the stub domain's heap (its allocator, the real engine) under 1000
# domains x 100 nodes and the domain size that needs (with the stub's image, built here), and
# appends its row and verdict to the same results.
#
# Usage: bench/run.sh [--quick] [xenstore-bench options...]
#   --quick            small sizes for CI (all three servers in well under 2 minutes)
#   other options go to xenstore-bench (e.g. --workloads W1,W3 or --servers ours,C-xenstored)
# Environment:
#   CARGO_TARGET_DIR   honoured for the builds (default: target/)
#   XS_BENCH_OURS_ARGS more options for our daemon (A/B runs, e.g. --no-io-uring)
#   XS_BENCH_DEBIAN_PACKAGES   the Debian packages to unpack instead of the list below (a test
#                      of the failure path: a bogus name makes the peers' set-up fail)
#
# The run fails (exit 1) when a server asked for (all three unless --servers says otherwise)
# cannot be set up or started, fails a workload (an error reply, a timeout, a lost connection),
# exits, or when ours refuses an optional request a peer answers; also when the stub image does
# not build or stub-heap fails. Its last line is the verdict: PASSED, or FAILED with every
# failure (server, workload, what happened). Goals and ratios are printed, never judged. A usage
# error exits 2. The peers are unpacked with tests/lib/debian-packages.sh (apt-get download +
# dpkg -x), never installed.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$repo/tests/lib/setup.sh" || { echo "bench/run.sh: FAILED: set-up failed (tests/lib/setup.sh)" >&2; exit 1; }
output=$repo/target/bench
target=${CARGO_TARGET_DIR:-$repo/target}
mkdir -p "$output"

# The servers the run compares: xenstore-bench's default, or what --servers names.
servers=ours,C-xenstored,oxenstored
previous=
for word in "$@"; do
    if [ "$previous" = --servers ]; then servers=$word; fi
    previous=$word
done

# Failures of this script's own steps (xenstore-bench lists the servers' in failures.txt).
failures=()

peer_options=()
if [[ ",$servers," == *,C-xenstored,* || ",$servers," == *,oxenstored,* ]]; then
    # Only what the two daemons load: xenstored needs libxenctrl/evtchn/gnttab, oxenstored
    # also libxenguest; both come from libxenmisc4.17 and the small libxen* packages.
    packages=(
        xen-utils-4.17 libxenmisc4.17 libxentoolcore1 libxencall1 libxendevicemodel1
        libxenevtchn1 libxenforeignmemory1 libxengnttab1 libxenhypfs1 libxentoollog1 libyajl2
    )
    if [ -n "${XS_BENCH_DEBIAN_PACKAGES:-}" ]; then
        read -r -a packages <<<"$XS_BENCH_DEBIAN_PACKAGES"
    fi
    # A fresh tree and shim every run: what an earlier run left must not stand in for them.
    rm -rf "$output/debian" "$output/fake-xen.so"
    peer_failure=
    if ! command -v apt-get >/dev/null; then
        peer_failure="no apt-get to fetch Debian's Xen 4.17 packages"
    elif ! bash "$repo/tests/lib/debian-packages.sh" "$output/debian" "${packages[@]}"; then
        peer_failure="fetching the Debian packages failed (tests/lib/debian-packages.sh ${packages[*]})"
    elif ! command -v gcc >/dev/null; then
        peer_failure="no gcc to build the fake-Xen shim bench/shim/fake-xen.c"
    elif ! gcc -O2 -Wall -Wextra -Werror -shared -fPIC -o "$output/fake-xen.so" \
        "$repo/bench/shim/fake-xen.c" -ldl; then
        peer_failure="building the fake-Xen shim bench/shim/fake-xen.c failed"
    fi
    if [ -n "$peer_failure" ]; then
        # xenstore-bench reports each peer's set-up failure; ours still runs.
        echo "run.sh: $peer_failure: the peers cannot run, and the run will fail" >&2
        peer_options=(--peer-setup-failure "$peer_failure")
    else
        peer_options=(--debian-root "$output/debian" --shim "$output/fake-xen.so")
    fi
fi

(cd "$repo" && CARGO_TARGET_DIR=$target cargo build --release --quiet \
    -p xenstored-linux -p xenstore-bench)

# Server run directories hold FIFOs, rings and sockets: keep their paths short.
# /dev/shm when there is one: the ring pages are then shared memory, as the convention intends,
# and creating thousands of guests does not wait for a disk.
if [ -d /dev/shm ] && [ -w /dev/shm ]; then temporary=/dev/shm; else temporary=/tmp; fi
work=$(mktemp -d "$temporary/xenstore-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

rm -f "$output/failures.txt"
bench_status=0
"$target/release/xenstore-bench" \
    --xenstored "$target/release/xenstored" \
    "${peer_options[@]}" \
    --work-dir "$work" \
    --output-dir "$output" \
    "$@" | tee "$output/results.txt" || bench_status=$?
if [ "$bench_status" = 2 ]; then
    exit 2 # a usage error, already printed
fi

# stub-heap's row is a W13 figure: skipped when --workloads names other workloads only. It runs
# the same size in quick and full mode (a second or two: no server, no rings on disk).
run_stub_heap=1
previous=
for word in "$@"; do
    if [ "$previous" = --workloads ] && [[ ",$word," != *,W13,* ]]; then
        run_stub_heap=0
    fi
    previous=$word
done
if [ "$run_stub_heap" = 1 ]; then
    # The stub's image: where its heap starts, for the domain size stub-heap reports. Without
    # it stub-heap assumes the image ends at 2 MiB and says so; the run then fails.
    if ! (cd "$repo" && CARGO_TARGET_DIR=$target cargo build --release --quiet \
        --target x86_64-unknown-none -p xenstore-stubdom); then
        echo "run.sh: building the stub image failed: stub-heap assumes its size" >&2
        failures+=("stub image: building xenstore-stubdom (x86_64-unknown-none) failed; stub-heap assumed its size")
    fi
    echo | tee -a "$output/results.txt"
    stub_heap_status=0
    "$target/release/stub-heap" --kernel "$target/x86_64-unknown-none/release/xenstore-stubdom" \
        --append-csv "$output/results.csv" | tee -a "$output/results.txt" || stub_heap_status=$?
    if [ "$stub_heap_status" != 0 ]; then
        failures+=("stub-heap: exited with status $stub_heap_status")
    fi
fi

# The verdict: xenstore-bench's failures (set-up, workloads, exits, refusals; one line per
# server and message, with its workloads), then this script's. The last line of the run, also
# at the end of results.txt.
all_failures=()
if [ -f "$output/failures.txt" ]; then
    mapfile -t all_failures <"$output/failures.txt"
fi
if [ "$bench_status" != 0 ] && [ ${#all_failures[@]} = 0 ]; then
    all_failures+=("xenstore-bench: exited with status $bench_status before listing its failures")
fi
all_failures+=("${failures[@]}")
echo | tee -a "$output/results.txt"
if [ ${#all_failures[@]} = 0 ]; then
    ran="${servers//,/, } ran every workload without a failure"
    [ "$run_stub_heap" = 1 ] && ran+=", and stub-heap ran"
    echo "bench/run.sh: PASSED: $ran (goals and ratios are reported, not judged)" |
        tee -a "$output/results.txt"
    exit 0
fi
joined=$(printf '%s; ' "${all_failures[@]}")
echo "bench/run.sh: FAILED: ${joined%; }" | tee -a "$output/results.txt"
exit 1
