#!/usr/bin/env bash
# Fetches Debian bookworm packages with `apt-get download` and unpacks them with `dpkg -x`.
# Nothing is installed on the host system.
#
# Usage: tests/lib/debian-packages.sh ROOT PACKAGE...
#   ROOT     folder that receives the unpacked trees (created if missing)
#   PACKAGE  Debian package names (bookworm, amd64)
# The .deb files are cached in ${XENSTORE_CACHE_DIR:-$HOME/.cache/xenstore-stubdom}/debs so that
# repeated runs on one machine do not download them again; a missing cache is refilled.
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 ROOT PACKAGE..." >&2
    exit 2
fi
root=$1
shift
cache=${XENSTORE_CACHE_DIR:-$HOME/.cache/xenstore-stubdom}/debs
mkdir -p "$cache" "$root"

# apt-get needs current package lists; run the update once per shell session tree.
if [ "${XENSTORE_APT_UPDATED:-}" != 1 ]; then
    apt-get update -qq >/dev/null
    export XENSTORE_APT_UPDATED=1
fi

for package in "$@"; do
    # The candidate version decides the file name, so a newer security update is fetched once.
    version=$(apt-cache policy "$package" | sed -n 's/^  Candidate: //p')
    if [ -z "$version" ] || [ "$version" = "(none)" ]; then
        echo "debian-packages: no candidate for $package" >&2
        exit 1
    fi
    file_version=${version//:/%3a}
    deb=$(ls "$cache/${package}_${file_version}_"*.deb 2>/dev/null | head -n 1 || true)
    if [ -z "$deb" ]; then
        # As root, apt warns that the download is unsandboxed; show its output only on failure.
        if ! log=$(cd "$cache" && apt-get download -qq "$package=$version" 2>&1); then
            echo "$log" >&2
            exit 1
        fi
        deb=$(ls "$cache/${package}_${file_version}_"*.deb | head -n 1)
    fi
    dpkg -x "$deb" "$root"
done
