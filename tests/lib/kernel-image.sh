#!/usr/bin/env bash
# Builds one of the two kernel images and prints its path: the only line on stdout (cargo
# writes to stderr). Every entry point that boots the kernel builds what it needs with it,
# so that they all agree on the commands and on where the images are (README "Testing").
#
#   tests/lib/kernel-image.sh product   the product image, what init-xenstore-domain boots:
#       cargo build --release --target x86_64-unknown-none -p xenstore-stubdom   (cargo kernel)
#       -> TARGET/x86_64-unknown-none/release/xenstore-stubdom
#   tests/lib/kernel-image.sh test      the test image: the same kernel with the test modes
#       --self-test, --hostile-ring and --debug-crash (cargo feature test-modes):
#       cargo build --profile release-test --features test-modes --target x86_64-unknown-none
#       -p xenstore-stubdom                                                  (cargo kernel-test)
#       -> TARGET/x86_64-unknown-none/release-test/xenstore-stubdom
# TARGET is the target folder cargo uses (CARGO_TARGET_DIR, .cargo/config.toml, or target/).
# The test image has a profile of its own (release-test, the release settings) so that
# building it never replaces the product image.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
case ${1:-} in
product) build=(--release) profile=release ;;
test) build=(--profile release-test --features test-modes) profile=release-test ;;
*) echo "usage: $0 product|test" >&2; exit 2 ;;
esac
command -v cargo >/dev/null || { echo "kernel-image.sh: cargo not found" >&2; exit 1; }
echo "kernel-image.sh: cargo build ${build[*]} --target x86_64-unknown-none -p xenstore-stubdom" >&2
(cd "$repo" && cargo build "${build[@]}" --target x86_64-unknown-none -p xenstore-stubdom >&2)
target_dir=$(cd "$repo" && cargo metadata --no-deps --format-version 1 |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])') ||
    target_dir=${CARGO_TARGET_DIR:-$repo/target}
case $target_dir in /*) ;; *) target_dir=$repo/$target_dir ;; esac
image=$target_dir/x86_64-unknown-none/$profile/xenstore-stubdom
[ -f "$image" ] || { echo "kernel-image.sh: cargo succeeded but $image does not exist" >&2; exit 1; }
echo "$image"
