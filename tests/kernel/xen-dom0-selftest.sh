#!/usr/bin/env bash
# Optional: run the kernel's --self-test on a real Xen hypervisor inside QEMU (TCG), with
# the kernel booted as a PVH *dom0* (Xen's own "dom0=pvh" builder).
#
# This needs no dom0 Linux, toolstack or xenstored, so it checks the hypervisor layer
# (CPUID detection, hypercall page, XENMEM_memory_map, add_to_physmap of shared_info,
# event channels, SCHEDOP_poll, heap) against real Xen in ~10 s. It does not replace the
# Xen-in-QEMU harness: as dom0 the kernel gets a version-0 start info, no PV console and
# Xen's dom0 memory map, and SHUTDOWN_poweroff halts the (emulated) machine.
#
# Usage: tests/kernel/xen-dom0-selftest.sh [TEST-IMAGE]
#   TEST-IMAGE: the kernel's test image (--self-test is a test mode, cargo feature
#   test-modes); default: built with tests/lib/kernel-image.sh test (cargo kernel-test).
# Environment: XEN_BINARY: an uncompressed multiboot Xen (default: Debian bookworm's
# xen-hypervisor-4.17-amd64, fetched with `apt-get download`); QEMU_TIMEOUT_SECONDS (60).
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repository=$(cd "$script_dir/../.." && pwd)
if [[ $# -ge 1 ]]; then
    image=$1
else
    image=$("$repository/tests/lib/kernel-image.sh" test)
fi
timeout_seconds=${QEMU_TIMEOUT_SECONDS:-60}
work_dir=$(mktemp -d)
trap 'rm -rf "$work_dir"' EXIT

if [[ ! -f $image ]]; then
    echo "FAIL: no kernel image at $image (build the test image with: cargo kernel-test)"
    exit 1
fi
if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
    echo "FAIL: qemu-system-x86_64 is not installed (see tests/kernel/qemu-smoke.sh)"
    exit 1
fi
xen=${XEN_BINARY:-}
if [[ -z $xen ]]; then
    (cd "$work_dir" && apt-get download xen-hypervisor-4.17-amd64 >/dev/null 2>&1) || {
        echo "FAIL: cannot apt-get download xen-hypervisor-4.17-amd64; set XEN_BINARY"
        exit 1
    }
    dpkg -x "$work_dir"/xen-hypervisor-4.17-amd64_*.deb "$work_dir/unpacked"
    gunzip -c "$work_dir"/unpacked/boot/xen-4.17-amd64.gz >"$work_dir/xen"
    xen=$work_dir/xen
fi
# QEMU's multiboot loader names modules by their first word; the rest is the module's
# command line, which Xen hands to dom0 (our kernel) as its command line.
cp "$image" "$work_dir/stub"
log=$work_dir/serial.log
status=0
timeout "$timeout_seconds" qemu-system-x86_64 \
    -machine q35 -cpu max,-pku,-smap,-smep,-la57,-rdtscp -m 1024 -smp 1 \
    -display none -no-reboot -monitor none -serial "file:$log" \
    -kernel "$xen" \
    -append "console=com1 loglvl=all guest_loglvl=all noreboot dom0=pvh dom0-iommu=none dom0_mem=64M" \
    -initrd "$work_dir/stub --self-test" 2>"$work_dir/qemu.err" &
qemu_pid=$!
# Xen halts (does not power off) the machine after dom0 shuts down: stop QEMU once the
# summary line appeared.
for ((second = 0; second < timeout_seconds; second++)); do
    if grep -q "self-test complete" "$log" 2>/dev/null || ! kill -0 "$qemu_pid" 2>/dev/null; then
        break
    fi
    sleep 1
done
sleep 1
kill "$qemu_pid" 2>/dev/null || true
wait "$qemu_pid" 2>/dev/null || status=$?
grep -F "(d0)" "$log" || { echo "-- Xen serial log:"; cat "$log"; }
summary=$(grep -oE "self-test complete: [0-9]+ ok, [0-9]+ failed" "$log" || true)
if [[ -n $summary && $summary == *", 0 failed" ]]; then
    echo "PASS: Xen PVH dom0 $summary"
else
    echo "FAIL: Xen PVH dom0 self-test (${summary:-no summary line}; QEMU status $status)"
    exit 1
fi
