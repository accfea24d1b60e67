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
  xen_in_qemu   sub-command xen-in-qemu (tests/xen-in-qemu/run.sh execs it): options, the
                scenario's declared needs, dom0's per-run initramfs, the boot and its
                stall retries
  dom0_base     the Xen versions (4.17, 4.20, 4.22) and the cached base each boots: the
                hypervisor, dom0's kernel and initramfs with the tools and their libraries
  debian        Debian packages with apt-get download and dpkg -x: the host's lists, or a
                private apt configuration for another suite (trixie)
  xen_qemu      sub-commands qemu-run, qemu-check, cpio, vmlinux: the initramfs writer and
                QEMU with its serial console watched (steps, stalls, panics, summary)

What runs inside dom0 stays busybox `sh` (tests/xen-in-qemu/lib/dom0-lib.sh, scenarios/).
"""
