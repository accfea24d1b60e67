#!/bin/sh
# The benchmark on real Xen, C xenstored against the stub: tests/harness/bench_xen.py (--help).
exec python3 "$(dirname "$0")/../tests/harness" bench-xen "$@"
