#!/bin/sh
# Xen-in-QEMU test harness: boots Xen (4.17 by default; --xen 4.20|4.22) with a Debian Linux
# dom0 inside QEMU and runs one scenario in dom0. The harness is Python
# (tests/harness/xen_in_qemu.py); this path stays because CI, the README and people use it.
# `tests/xen-in-qemu/run.sh --help` prints the usage.
exec python3 "$(dirname "$0")/../harness" xen-in-qemu "$@"
