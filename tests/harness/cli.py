"""Sub-command dispatch of the harness tool."""

import sys

# name -> (module, one-line summary); each module has main(argv) -> exit status and a
# docstring that is its --help.
COMMANDS = {
    "real-clients": ("real_clients", "Debian's xenstore clients and test-xenstore against the daemon"),
    "bench-xen": ("bench_xen", "the benchmark on real Xen: C xenstored against the stub"),
}


def usage(out):
    print("usage: python3 tests/harness SUB-COMMAND [ARGUMENT...]\n\nsub-commands:", file=out)
    for name, (_, summary) in COMMANDS.items():
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
    module = __import__(f"harness.{entry[0]}", fromlist=["main"])
    return module.main(argv[1:])
