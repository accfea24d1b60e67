#!/usr/bin/env bash
# The one set-up of every entry point (tests/run-all.sh, tests/xen-in-qemu/run.sh,
# tests/real-clients/run.sh, bench/run.sh, bench/xen-in-qemu.sh, fuzz/run.sh): installs what
# they need on a fresh Debian bookworm machine that has only Rust (rustup) and Debian.
# Idempotent, and quick when everything is already there. Run it as a command.
#
#   tests/lib/setup.sh [--nightly] [--cargo-fuzz] [--miri]
#     (always)      the toolchain of rust-toolchain.toml with its kernel target
#                   x86_64-unknown-none, and the Debian packages the checks run (QEMU,
#                   binutils, cpio, gzip, python3)
#     --nightly     a nightly toolchain with rust-src (the custom-target image build, fuzzing)
#     --cargo-fuzz  cargo-fuzz from crates.io, built once into
#                   ${XENSTORE_CACHE_DIR:-~/.cache/xenstore-stubdom}/cargo-fuzz/bin (implies
#                   --nightly; the caller puts that folder on its PATH)
#     --miri        Miri on the nightly toolchain (implies --nightly), for the ring host's
#                   tests under Miri (tests/run-all.sh, step miri-ring-host)
#
# Why the target is added by hand: rustup installs a toolchain file's `targets` only when it
# installs the toolchain itself; on a machine where 1.95.0 is already installed without the
# target, every kernel build fails with "can't find crate for core" (issue 16).
# Every failure is fatal: a check whose tools cannot be installed must fail, not skip.
set -euo pipefail

setup_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
setup_cache=${XENSTORE_CACHE_DIR:-$HOME/.cache/xenstore-stubdom}

setup_say() { echo "setup: $*" >&2; }

setup_want_nightly=0
setup_want_cargo_fuzz=0
setup_want_miri=0
for setup_argument in "$@"; do
    case $setup_argument in
    --nightly) setup_want_nightly=1 ;;
    --cargo-fuzz) setup_want_nightly=1; setup_want_cargo_fuzz=1 ;;
    --miri) setup_want_nightly=1; setup_want_miri=1 ;;
    *) setup_say "unknown option $setup_argument"; exit 2 ;;
    esac
done

if ! command -v rustup >/dev/null 2>&1 || ! command -v cargo >/dev/null 2>&1; then
    setup_say "cargo and rustup are missing; install Rust with rustup first"
    exit 1
fi

# The pinned toolchain (installed by rustup on first use inside the repository) and its target.
if ! (cd "$setup_repo" && rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-none); then
    setup_say "adding the kernel target x86_64-unknown-none to $(cd "$setup_repo" && rustup show active-toolchain | cut -d' ' -f1)"
    (cd "$setup_repo" && rustup target add x86_64-unknown-none)
fi

if [ "$setup_want_nightly" = 1 ]; then
    if ! rustup run nightly rustc --version >/dev/null 2>&1; then
        setup_say "installing a nightly toolchain with rust-src"
        rustup toolchain install nightly --profile minimal --component rust-src
    elif ! rustup +nightly component list --installed 2>/dev/null | grep -q '^rust-src'; then
        setup_say "adding rust-src to the nightly toolchain"
        rustup +nightly component add rust-src
    fi
    if [ "$setup_want_miri" = 1 ] && ! rustup +nightly component list --installed 2>/dev/null | grep -q '^miri'; then
        setup_say "adding miri to the nightly toolchain"
        rustup +nightly component add miri
    fi
fi

# cargo-fuzz, built once with the nightly toolchain into the cache (never rely on the cache:
# a missing one is rebuilt).
setup_cargo_fuzz_root=$setup_cache/cargo-fuzz
if [ "$setup_want_cargo_fuzz" = 1 ] && ! [ -x "$setup_cargo_fuzz_root/bin/cargo-fuzz" ]; then
    setup_say "installing cargo-fuzz into $setup_cargo_fuzz_root"
    mkdir -p "$setup_cargo_fuzz_root"
    cargo +nightly install cargo-fuzz --locked --root "$setup_cargo_fuzz_root"
fi

# Debian packages the tests run (never the Xen packages: those are unpacked, not installed).
setup_needed=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || setup_needed+=(qemu-system-x86)
command -v readelf >/dev/null 2>&1 || setup_needed+=(binutils)
command -v cpio >/dev/null 2>&1 || setup_needed+=(cpio)
command -v gzip >/dev/null 2>&1 || setup_needed+=(gzip)
command -v python3 >/dev/null 2>&1 || setup_needed+=(python3)
if [ ${#setup_needed[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        setup_say "please install as root: apt-get install ${setup_needed[*]}"
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if [ "${XENSTORE_APT_UPDATED:-}" != 1 ]; then
        apt-get update -qq
        export XENSTORE_APT_UPDATED=1
    fi
    apt-get install -y -qq --no-install-recommends "${setup_needed[@]}" >/dev/null
fi
