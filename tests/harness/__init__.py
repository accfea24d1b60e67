"""The host side of the project's system tests and of the benchmark on real Xen, as one tool.

Run it as `python3 tests/harness SUB-COMMAND ...` (or `python3 tests/harness --help`); the
shell entry points that CI and the README name (tests/real-clients/run.sh,
bench/xen-in-qemu.sh) are wrappers that exec it. Standard library only (Python 3.11, as on
Debian bookworm), so that a fresh machine needs nothing but tests/lib/setup.sh.

Modules:
  common        the repository, tests/lib/setup.sh, commands with a time limit, the stub
                image build (tests/lib/kernel-image.sh)
  checks        the PASS/FAIL reporter shared by check lists ("N passed, M failed")
  real_clients  sub-command real-clients: Debian's xenstore clients and Xen's
                test-xenstore against the daemon (xenstored-linux)
  bench_xen     sub-command bench-xen: the benchmark on real Xen (C xenstored against the
                stub), booted through tests/xen-in-qemu/run.sh
  xen_qemu      sub-commands qemu-run, qemu-check, cpio, vmlinux: what
                tests/xen-in-qemu/run.sh calls to build the initramfs and to boot QEMU with
                its serial console watched (formerly tests/xen-in-qemu/lib/harness.py, which
                stays as a path that execs it)

What runs inside dom0 stays busybox `sh` (tests/xen-in-qemu/lib/dom0-lib.sh, scenarios/).
"""
