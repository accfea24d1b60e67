#!/usr/bin/env bash
# Boot smoke test of the PVH kernel under bare QEMU (no Xen).
#
# QEMU boots the image through its PVH entry (the XEN_ELFNOTE_PHYS32_ENTRY note). With no
# Xen in CPUID the kernel parses the start info, sets up and checks its heap, prints
#   xenstore-stubdom: no Xen hypervisor found
# on port 0xE9 (QEMU -debugcon) and writes 0x21 to isa-debug-exit (iobase 0xf4), which makes
# QEMU exit with status (0x21 << 1) | 1 = 67. Status 69 means the kernel hit a failure
# (panic or a failed boot check) without Xen; anything else (e.g. 0 from a triple fault
# with -no-reboot, 124 from the timeout) means it never got that far.
# A second boot of IMAGE with --debug-crash panic checks that the product image has no test
# modes: it must ignore the option and exit with 67 as well.
# Two boots of the test image (cargo feature test-modes) check the crash paths with its
# test hook --debug-crash: a Rust panic and a CPU page fault must both print their reason
# and the trace ring and exit with 69.
#
# Usage: tests/kernel/qemu-smoke.sh [IMAGE [TEST-IMAGE]]
#   IMAGE: the product image; TEST-IMAGE: the test image. Each one not given is built with
#   tests/lib/kernel-image.sh (product: cargo kernel, test: cargo kernel-test) in
#   $CARGO_TARGET_DIR (default: target/).
# Environment: QEMU_TIMEOUT_SECONDS (default 60).
# Installs qemu-system-x86 (apt-get, when running as root) if qemu-system-x86_64 is missing.
# Prints PASS:/FAIL: lines; exits non-zero on failure.
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repository=$(cd "$script_dir/../.." && pwd)
timeout_seconds=${QEMU_TIMEOUT_SECONDS:-60}
# isa-debug-exit: value 0x21 -> status 67 (no Xen, checks passed); 0x22 -> 69 (failure).
expected_status=67
failures=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

if [[ $# -lt 2 ]] && command -v rustup >/dev/null 2>&1; then
    (cd "$repository" && rustup target add x86_64-unknown-none >/dev/null 2>&1) || true
fi
if [[ $# -ge 1 ]]; then
    image=$1
else
    echo "building the product image"
    image=$("$repository/tests/lib/kernel-image.sh" product)
fi
if [[ $# -ge 2 ]]; then
    test_image=$2
else
    echo "building the test image"
    test_image=$("$repository/tests/lib/kernel-image.sh" test)
fi
for file in "$image" "$test_image"; do
    if [[ ! -f $file ]]; then
        echo "FAIL: no kernel image at $file"
        exit 1
    fi
done

if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "qemu-system-x86_64 missing: installing qemu-system-x86"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null
    else
        echo "FAIL: qemu-system-x86_64 is not installed (install qemu-system-x86, or run as root)"
        exit 1
    fi
fi

echo "== ELF notes"
if "$script_dir/check-notes.sh" "$image"; then
    pass "ELF notes"
else
    fail "ELF notes (see above)"
fi

work_dir=$(mktemp -d)
trap 'rm -rf "$work_dir"' EXIT

# Boots an image with a command line (it reaches the kernel through the PVH start info).
# Sets $status and $console_log.
boot_kernel() {
    local name=$1 kernel=$2 command_line=$3
    console_log=$work_dir/$name.debugcon.log
    local qemu_log=$work_dir/$name.qemu.log
    status=0
    timeout "$timeout_seconds" qemu-system-x86_64 \
        -machine q35 -m 128M -display none -no-reboot \
        -serial none -monitor none \
        -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
        -debugcon "file:$console_log" \
        -kernel "$kernel" -append "$command_line" >"$qemu_log" 2>&1 || status=$?
    echo "-- kernel console (port 0xE9), command line \"$command_line\":"
    cat "$console_log" 2>/dev/null || true
    if [[ -s $qemu_log ]]; then
        echo "-- QEMU output:"
        cat "$qemu_log"
    fi
    echo "--"
}

check_status() {
    local wanted=$1 meaning=$2
    if [[ $status -eq $wanted ]]; then
        pass "QEMU exit status $status ($meaning)"
    elif [[ $status -eq 124 ]]; then
        fail "QEMU did not exit within ${timeout_seconds}s (wanted status $wanted: $meaning)"
    else
        fail "QEMU exit status $status, expected $wanted ($meaning)"
    fi
}

check_line() {
    local description=$1 pattern=$2
    if grep -qF -- "$pattern" "$console_log" 2>/dev/null; then
        pass "$description"
    else
        fail "$description: no line containing '$pattern'"
    fi
}

echo "== boot under QEMU (no Xen)"
command_line="--event 7 -E 1000"
boot_kernel normal "$image" "$command_line"
check_status "$expected_status" "isa-debug-exit value 0x21: no Xen found, boot checks passed"
check_line "PVH entry reached Rust, start info parsed" "xenstore-stubdom: booting: PVH start info v"
check_line "command line passed through the start info" "command line \"$command_line\""
check_line "heap set up and checked" "allocated and freed"
check_line "no-Xen console line" "xenstore-stubdom: no Xen hypervisor found"

echo "== the product image has no test modes"
boot_kernel product-no-test-modes "$image" "--debug-crash panic"
check_status "$expected_status" "--debug-crash ignored: no Xen found, boot checks passed"
if grep -qF "PANIC" "$console_log" 2>/dev/null; then
    fail "the product image obeyed --debug-crash panic"
else
    pass "the product image ignored --debug-crash panic"
fi

echo "== crash path (test image $test_image): Rust panic"
boot_kernel panic "$test_image" "--debug-crash panic"
check_status 69 "isa-debug-exit value 0x22: failure reported"
check_line "panic reason printed" "xenstore-stubdom: PANIC at "
check_line "trace ring printed" "xenstore-stubdom: recent trace (oldest first):"

echo "== crash path (test image): CPU page fault"
boot_kernel page-fault "$test_image" "--debug-crash page-fault"
check_status 69 "isa-debug-exit value 0x22: failure reported"
check_line "exception reported" "CPU exception 14 (page fault)"

if [[ $failures -ne 0 ]]; then
    echo "FAIL: kernel smoke test ($failures failure(s))"
    exit 1
fi
echo "PASS: kernel smoke test"
