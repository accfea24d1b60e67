#!/bin/sh
# Debian's xenstore clients and Xen's test-xenstore against the daemon: tests/harness/real_clients.py.
exec python3 "$(dirname "$0")/../harness" real-clients "$@"
