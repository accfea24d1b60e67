"""Sub-command dispatch of the harness tool."""

import sys

# name -> (module, the module's own sub-command or None, one-line summary); each module
# has main(argv) -> exit status and a docstring that is its --help.
COMMANDS = {
    "real-clients": ("real_clients", None, "Debian's xenstore clients and test-xenstore against the daemon"),
    "bench-xen": ("bench_xen", None, "the benchmark on real Xen: C xenstored against the stub"),
    "qemu-run": ("xen_qemu", "run", "boot QEMU, watch its serial console (steps, stalls, panics), summarise"),
    "qemu-check": ("xen_qemu", "check", "check qemu-run against fake consoles (~15 s)"),
    "cpio": ("xen_qemu", "cpio", "write a folder as a gzip'ed newc cpio archive (an initramfs)"),
    "vmlinux": ("xen_qemu", "vmlinux", "extract the ELF vmlinux from a bzImage"),
}


def usage(out):
    print("usage: python3 tests/harness SUB-COMMAND [ARGUMENT...]\n\nsub-commands:", file=out)
    for name, (_, _, summary) in COMMANDS.items():
        print(f"  {name:<14} {summary}", file=out)
    print("\n`python3 tests/harness SUB-COMMAND --help` describes one.", file=out)


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        usage(sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    entry = COMMANDS.get(argv[0])
    if entry is None:
        print(f"harness: unknown sub-command {argv[0]!r}", file=sys.stderr)
        usage(sys.stderr)
        return 2
    module_name, own, _ = entry
    module = __import__(f"harness.{module_name}", fromlist=["main"])
    return module.main(([own] if own else []) + argv[1:])
