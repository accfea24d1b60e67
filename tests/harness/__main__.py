"""Entry point: `python3 tests/harness SUB-COMMAND [ARGUMENT...]` (see __init__.py)."""

import os
import sys

if __package__ in (None, ""):
    # Run as a folder (`python3 tests/harness`): make `harness` importable as a package, so
    # that its modules import each other the same way whatever the caller's directory.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness import cli  # noqa: E402  (needs the path set above)

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:]))
