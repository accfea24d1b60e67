#!/usr/bin/env bash
# Installs what the tests and the main job need on a fresh Debian bookworm machine (run as root).
# Source it or run it; it is idempotent and quick when everything is already there.
set -euo pipefail

setup_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo is missing; install Rust with rustup first" >&2
    exit 1
fi

# The kernel's target (rust-toolchain.toml names it; rustup fetches it on demand, but say so).
if ! (cd "$setup_repo" && rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-none); then
    (cd "$setup_repo" && rustup target add x86_64-unknown-none)
fi

# Debian packages the tests run (never the Xen packages: those are unpacked, not installed).
needed=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || needed+=(qemu-system-x86)
command -v readelf >/dev/null 2>&1 || needed+=(binutils)
command -v cpio >/dev/null 2>&1 || needed+=(cpio)
command -v gzip >/dev/null 2>&1 || needed+=(gzip)
command -v python3 >/dev/null 2>&1 || needed+=(python3)
if [ ${#needed[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup: please install as root: apt-get install ${needed[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    export XENSTORE_APT_UPDATED=1
    apt-get install -y -qq --no-install-recommends "${needed[@]}" >/dev/null
fi
