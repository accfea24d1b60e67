#!/usr/bin/env bash
# Runs the benchmark suite: our xenstored, Debian bookworm's C xenstored and oxenstored (Xen 4.17,
# under bench/shim/fake-xen.c) through every workload; prints the table, the ratios and the goals
# of performance.md §4.4, and writes target/bench/results.csv and target/bench/scaling.svg.
# Then stub-heap measures the stub domain's heap (its allocator, the real engine) under 1000
# domains x 100 nodes and the domain size that needs (with the stub's image, built here), and
# appends its row and verdict to the same results.
#
# Usage: bench/run.sh [--quick] [xenstore-bench options...]
#   --quick            small sizes for CI (all three servers in well under 2 minutes)
#   other options go to xenstore-bench (e.g. --workloads W1,W3 or --servers ours,C-xenstored)
# Environment:
#   CARGO_TARGET_DIR   honoured for the builds (default: target/)
#   XENSTORE_BENCH_NO_PEERS=1   skip fetching and running the Debian peers
#
# The peers are unpacked with tests/lib/debian-packages.sh (apt-get download + dpkg -x), never
# installed. If they or the shim cannot be prepared, only our server runs, and the run says so.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
output=$repo/target/bench
target=${CARGO_TARGET_DIR:-$repo/target}
mkdir -p "$output"

peer_options=()
if [ "${XENSTORE_BENCH_NO_PEERS:-}" != 1 ]; then
    # Only what the two daemons load: xenstored needs libxenctrl/evtchn/gnttab, oxenstored
    # also libxenguest; both come from libxenmisc4.17 and the small libxen* packages.
    packages=(
        xen-utils-4.17 libxenmisc4.17 libxentoolcore1 libxencall1 libxendevicemodel1
        libxenevtchn1 libxenforeignmemory1 libxengnttab1 libxenhypfs1 libxentoollog1 libyajl2
    )
    if ! command -v apt-get >/dev/null; then
        echo "run.sh: no apt-get: the Debian peers are skipped" >&2
    elif ! bash "$repo/tests/lib/debian-packages.sh" "$output/debian" "${packages[@]}"; then
        echo "run.sh: fetching the Debian packages failed: the peers are skipped" >&2
    elif ! gcc -O2 -Wall -Wextra -Werror -shared -fPIC -o "$output/fake-xen.so" \
        "$repo/bench/shim/fake-xen.c" -ldl; then
        echo "run.sh: building the fake-Xen shim failed: the peers are skipped" >&2
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

"$target/release/xenstore-bench" \
    --xenstored "$target/release/xenstored" \
    "${peer_options[@]}" \
    --work-dir "$work" \
    --output-dir "$output" \
    "$@" | tee "$output/results.txt"

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
    # it stub-heap assumes the image ends at 2 MiB and says so.
    if ! (cd "$repo" && CARGO_TARGET_DIR=$target cargo build --release --quiet \
        --target x86_64-unknown-none -p xenstore-stubdom); then
        echo "run.sh: building the stub image failed: stub-heap assumes its size" >&2
    fi
    echo | tee -a "$output/results.txt"
    "$target/release/stub-heap" --kernel "$target/x86_64-unknown-none/release/xenstore-stubdom" \
        --append-csv "$output/results.csv" | tee -a "$output/results.txt"
fi
