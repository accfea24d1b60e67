#!/usr/bin/env bash
# Makes engine/tests/fixtures/c-xenstored-4.17-live-update.stream again: a migration stream
# (docs/migration-stream.md) written by C xenstored itself. Debian bookworm's xenstored (Xen
# 4.17) runs on plain Linux under the fake-Xen shim bench/shim/fake-xen.c, as in bench/run.sh;
# tests/lib/c-stream-populate.py fills it (dom0 on the socket, three simulated guests on rings)
# and asks it for a live update (XS_CONTROL "live-update -f BINARY", then "-s -t 5"). C then
# writes <rundir>/state_dump and exec()s BINARY, here a script that copies the file out and
# exits. The Debian packages are fetched with apt-get download and unpacked with dpkg -x
# (tests/lib/debian-packages.sh, cached under ${XENSTORE_CACHE_DIR:-~/.cache/xenstore-stubdom}),
# never installed.
#
# Usage: tests/lib/make-c-stream.sh [--then-ours XENSTORED] [OUTPUT]
#   OUTPUT  where the stream goes (default: engine/tests/fixtures/c-xenstored-4.17-live-update.stream)
#   --then-ours XENSTORED  a live update from C to our daemon: BINARY copies the stream and
#           then exec()s XENSTORED (our daemon, which takes C's -N -F FILE -U) in C's process;
#           c-stream-populate.py --check-ours then checks that ours serves the store as C left
#           it (dom0 on a new socket; the guests' rings, with C's queued events and a half
#           request, go on).
# Exits 1 with the reason when it cannot make the stream (no apt-get, gcc or python3, a
# download, the daemon or the live update failing): there is no skipping.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ours=
if [ "${1:-}" = --then-ours ]; then
    [ $# -ge 2 ] || { echo "usage: $0 [--then-ours XENSTORED] [OUTPUT]" >&2; exit 2; }
    ours=$(realpath "$2")
    shift 2
fi
output=${1:-$repo/engine/tests/fixtures/c-xenstored-4.17-live-update.stream}

die() {
    echo "make-c-stream: FAILED: $*" >&2
    exit 1
}

for tool in apt-get dpkg gcc python3; do
    command -v "$tool" >/dev/null || die "no $tool (needed to fetch and run Debian's C xenstored)"
done

# Run directories hold FIFOs and a socket: keep the path short.
work=$(mktemp -d /tmp/c-stream.XXXXXX)
daemon_pid=
cleanup() {
    if [ -n "$daemon_pid" ]; then kill "$daemon_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# What xenstored 4.17 loads (as bench/run.sh lists them).
packages=(
    xen-utils-4.17 libxenmisc4.17 libxentoolcore1 libxencall1 libxendevicemodel1
    libxenevtchn1 libxenforeignmemory1 libxengnttab1 libxenhypfs1 libxentoollog1 libyajl2
)
bash "$repo/tests/lib/debian-packages.sh" "$work/debian" "${packages[@]}" ||
    die "fetching the Debian packages failed (tests/lib/debian-packages.sh ${packages[*]})"
xenstored=$work/debian/usr/lib/xen-4.17/bin/xenstored
[ -x "$xenstored" ] || die "xen-utils-4.17 has no usr/lib/xen-4.17/bin/xenstored"
gcc -O2 -Wall -Wextra -Werror -shared -fPIC -o "$work/fake-xen.so" \
    "$repo/bench/shim/fake-xen.c" -ldl || die "building bench/shim/fake-xen.c failed"

rundir=$work/run
mkdir -p "$rundir"
# The "new binary" of the live update: C exec()s it with its own arguments and -U, in its
# own process, after writing the stream. It copies the stream out and ends the process.
cat >"$work/live-update-binary" <<'EOF'
#!/bin/sh
cp "$XENSTORED_RUNDIR/state_dump" "$XENSTORED_RUNDIR/captured.stream"
echo "$@" >"$XENSTORED_RUNDIR/live-update-arguments"
EOF
if [ -n "$ours" ]; then
    [ -x "$ours" ] || die "$ours is not an executable"
    # Our daemon needs no shim; it reads state_dump itself (and removes it).
    cat >>"$work/live-update-binary" <<EOF
unset LD_PRELOAD
exec "$ours" "\$@" 2>"\$XENSTORED_RUNDIR/ours.log"
EOF
fi
chmod +x "$work/live-update-binary"

LD_LIBRARY_PATH=$work/debian/usr/lib/x86_64-linux-gnu:$work/debian/usr/lib \
    LD_PRELOAD=$work/fake-xen.so XS_SHIM_RUNDIR=$rundir XS_SHIM_SOCKET=$rundir/socket \
    XENSTORED_PATH=$rundir/socket XENSTORED_RUNDIR=$rundir \
    "$xenstored" -N -F "$rundir/xenstored.pid" >"$work/xenstored.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 100); do
    [ -S "$rundir/socket" ] && break
    kill -0 "$daemon_pid" 2>/dev/null || die "xenstored exited at start: $(cat "$work/xenstored.log")"
    sleep 0.05
done
[ -S "$rundir/socket" ] || die "xenstored made no socket within 5 s"

python3 "$repo/tests/lib/c-stream-populate.py" "$rundir" "$rundir/socket" \
    "$work/live-update-binary" || die "filling the store or asking for the live update failed"

for _ in $(seq 100); do
    [ -f "$rundir/live-update-arguments" ] && break
    sleep 0.05
done
[ -f "$rundir/live-update-arguments" ] ||
    die "xenstored did not exec the live-update binary: $(cat "$work/xenstored.log")"
grep -q -- "-U" "$rundir/live-update-arguments" ||
    die "the live-update binary was not given -U: $(cat "$rundir/live-update-arguments")"
if [ -n "$ours" ]; then
    # The process is ours now (exec() keeps the pid); its socket replaces C's once the state
    # is restored.
    for _ in $(seq 100); do
        grep -q "state restored" "$rundir/ours.log" 2>/dev/null && break
        kill -0 "$daemon_pid" 2>/dev/null || die "our daemon exited: $(cat "$rundir/ours.log")"
        sleep 0.05
    done
    grep -q "state restored" "$rundir/ours.log" ||
        die "our daemon did not restore C's state within 5 s: $(cat "$rundir/ours.log")"
    python3 "$repo/tests/lib/c-stream-populate.py" --check-ours "$rundir" "$rundir/socket" ||
        die "our daemon does not serve C's store as C left it (its log: $(cat "$rundir/ours.log"))"
    kill "$daemon_pid"
fi
wait "$daemon_pid" || true
daemon_pid=
mkdir -p "$(dirname "$output")"
cp "$rundir/captured.stream" "$output"
echo "make-c-stream: wrote $output ($(stat -c %s "$output") bytes) from $(basename "$xenstored") of" \
    "$(ls "${XENSTORE_CACHE_DIR:-$HOME/.cache/xenstore-stubdom}/debs" | grep '^xen-utils-4.17_' | tail -n 1)"
