#!/usr/bin/env python3
"""Moved into the harness tool: tests/harness/xen_qemu.py (cpio, vmlinux, run, check; see
its --help). This path stays for the callers that name it (run.sh, check-stall-watch.sh,
tests/run-all.sh) until they call `python3 tests/harness` themselves."""

import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
tool = os.path.join(os.path.dirname(os.path.dirname(here)), "harness", "xen_qemu.py")
os.execv(sys.executable, [sys.executable, tool, *sys.argv[1:]])
