#!/usr/bin/env bash
# Checks the harness's stall watch (python3 tests/harness qemu-run --stall-seconds) without Xen: a QEMU
# started paused (-S) never runs its vCPU threads, exactly what a vCPU halted for good looks
# like from the host.
#  1. With --stall-seconds 2 the harness must stop QEMU within a few seconds, say
#     `stalled: QEMU's vCPU ...` and exit with status 3 (run.sh boots such a run again).
#  2. With --stall-seconds 0 (the watch off) the same QEMU must run into the time limit
#     instead: exit status 1 and "time limit reached".
# Needs qemu-system-x86_64 (tests/lib/setup.sh installs it). ~10 s.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
qemu=(qemu-system-x86_64 -name stall-check,debug-threads=on -accel tcg,thread=multi -smp 2 -m 64
    -display none -monitor none -serial stdio -S)
fail=0

started=$SECONDS
status=0
python3 "$here/../harness" qemu-run --name stall-check --stall-seconds 2 --timeout 60 \
    --log "$out/on.log" -- "${qemu[@]}" >"$out/on.out" 2>&1 || status=$?
took=$((SECONDS - started))
if [ "$status" = 3 ] && grep -q "stalled: QEMU's vCPU [01] has not run for" "$out/on.out" && [ "$took" -lt 30 ]; then
    echo "PASS: watch on: a paused QEMU was stopped as stalled after $took s (exit 3)"
else
    echo "FAIL: watch on: exit $status after $took s (want 3, well before the 60 s limit)"
    sed 's/^/    /' "$out/on.out"
    fail=1
fi

status=0
python3 "$here/../harness" qemu-run --name stall-check --stall-seconds 0 --timeout 5 \
    --log "$out/off.log" -- "${qemu[@]}" >"$out/off.out" 2>&1 || status=$?
if [ "$status" = 1 ] && grep -q "time limit reached" "$out/off.out" && ! grep -q "stalled:" "$out/off.out"; then
    echo "PASS: watch off: the same QEMU ran into the 5 s time limit (exit 1)"
else
    echo "FAIL: watch off: exit $status (want 1, time limit reached, no stall)"
    sed 's/^/    /' "$out/off.out"
    fail=1
fi
exit "$fail"
