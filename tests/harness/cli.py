"""Sub-command dispatch of the harness tool."""

import sys

# name -> (module, its function, arguments put first, one-line summary). The functions take
# the argument list and return the exit status; a module's docstring is its --help.
COMMANDS = {
    "real-clients": ("real_clients", "main", [], "Debian's xenstore clients and test-xenstore against the daemon"),
    "bench-xen": ("bench_xen", "main", [], "the benchmark on real Xen: C xenstored against the stub"),
    "bench-xen-check": ("bench_xen", "check", [], "check bench-xen's figures, CSV and table against fixed logs"),
    "xen-in-qemu": ("xen_in_qemu", "main", [], "boot Xen (4.17, 4.20, 4.22) in QEMU and run one scenario in dom0"),
    "qemu-run": ("xen_qemu", "main", ["run"], "boot QEMU, watch its serial console (steps, stalls, panics), summarise"),
    "qemu-check": ("xen_qemu", "main", ["check"], "check qemu-run against fake consoles, and the retry evidence (~15 s)"),
    "cpio": ("xen_qemu", "main", ["cpio"], "write a folder as a gzip'ed newc cpio archive (an initramfs)"),
    "vmlinux": ("xen_qemu", "main", ["vmlinux"], "extract the ELF vmlinux from a bzImage"),
}


def usage(out):
    print("usage: python3 tests/harness SUB-COMMAND [ARGUMENT...]\n\nsub-commands:", file=out)
    for name, entry in COMMANDS.items():
        print(f"  {name:<16} {entry[3]}", file=out)
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
    module_name, function, first, _ = entry
    module = __import__(f"harness.{module_name}", fromlist=[function])
    return getattr(module, function)(first + argv[1:])
