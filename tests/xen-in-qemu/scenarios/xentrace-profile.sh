# Scenario `xentrace-profile`: where the time of a dom0 xenstore round trip goes, seen by
# Xen's own tracer. Diagnostic, not in the test suite. Runs on the stub (default) or on C
# xenstored (--xenstore c). ~1.5 min.
#  1. `test-xenstore -t "$TEST" -i ITER` (TEST "read 1", ITER 300) three times untraced:
#     per-operation averages.
#  2. The same once under `xentrace -e MASK` (default 0x000af000: scheduler + HVM events),
#     then `xenalyze --summary --svm-mode`: per domain and vCPU, runstate times (running,
#     runnable, blocked, wake-to-run latencies) and, for the stub (an HVM container), its
#     guest exits by reason with their cycles.
#  3. Stub only: `xenalyze --dump-all` through xentrace-profile.files/phases.awk, which
#     follows each event sent to the stub (domain 1) and prints `PHASE` lines (median, p90,
#     mean, µs): wake-to-run (event to the vCPU running), switch-in (running to the first
#     VMRUN), guest (time in the guest up to its multicall), exits (guest exits per
#     service, the multicall included), vmcall-to-notify (multicall exit to dom0's vCPU
#     woken), notify-to-block, event-to-notify, wake-to-wake (one whole round trip).
# Tracing slows everything down by 20-40%; compare PHASE figures between runs, not with
# the untraced averages. xenalyze times assume CPU_HZ (default 2.596G: the TSC rate Xen
# reports under this harness; `xl dmesg | grep MHz`).
# PLACE: commands run in dom0 before the measurements, to try a CPU placement, e.g.
#   --set PLACE="xl vcpu-pin 1 all 0"   (every vCPU of domain 1, the stub, on CPU 0).
# Run: tests/xen-in-qemu/run.sh xentrace-profile [--xenstore c] [--set ITER=1000]
#
# harness-needs: xenstore
# harness-expect: xenstore profile-untraced profile-trace profile-summary
# harness-timeout: 1200
set -u

TX=$TEST_XENSTORE
ITER=${ITER:-300}
TEST=${TEST:-read 1}
MASK=${MASK:-0x000af000}
CPU_HZ=${CPU_HZ:-2.596G}

start_xenstore || exit 1
xs "$TX" -t "read 1" -i 20 >/dev/null 2>&1
xl dmesg | grep -m 1 'MHz processor' | sed 's/^/INFO: /'
apply_placement
[ -n "${PLACE:-}" ] || xl vcpu-list

: >/tmp/untraced
for _ in 1 2 3; do
    XS_TIMEOUT=300 xs "$TX" -t "$TEST" -i "$ITER" 2>&1 | grep 'avg' | tee -a /tmp/untraced
done
if [ "$(wc -l </tmp/untraced)" = 3 ]; then
    pass profile-untraced "3 x $ITER '$TEST': $(sed -n 's/.*avg: *\([0-9]*\) ns.*/\1/p' /tmp/untraced | tr '\n' ' ')ns per iteration"
else
    fail profile-untraced "test-xenstore -t '$TEST' -i $ITER did not report 3 averages"
fi

xentrace -D -e "$MASK" -S 256 /tmp/trace.bin &
tracer=$!
sleep 2
XS_TIMEOUT=300 xs "$TX" -t "$TEST" -i "$ITER" 2>&1 | grep 'avg' | sed 's/^/traced: /'
sleep 1
kill -INT "$tracer"
wait "$tracer"
size=$(stat -c %s /tmp/trace.bin 2>/dev/null || echo 0)
if [ "$size" -gt 0 ]; then pass profile-trace "$size bytes of trace"; else fail profile-trace "xentrace wrote nothing"; fi

if xenalyze --summary --svm-mode --cpu-hz="$CPU_HZ" /tmp/trace.bin >/tmp/summary 2>&1; then
    sed -n '/^|-- Domain/,$p' /tmp/summary | head -n 400
    pass profile-summary "xenalyze --summary"
else
    show /tmp/summary "xenalyze --summary"
    fail profile-summary "xenalyze failed"
fi
if [ "${XENSTORE:-stub}" = stub ]; then
    xenalyze --dump-all --svm-mode --cpu-hz="$CPU_HZ" /tmp/trace.bin 2>/dev/null |
        awk -f "$FILES_DIR/phases.awk" | sort
    pass profile-phases "PHASE lines above"
fi
