#!/usr/bin/env python3
"""Prints the figures the codebase's shape is judged by (docs/architecture.md).

Usage: tests/lib/code-figures.py [REPOSITORY]   (default: this checkout)

- the longest functions and the longest product source files (tests, benchmarks and fuzz
  targets are not product; a `#[cfg(test)] mod tests;` in its own file is not counted with
  the module it tests);
- the serving code of each front end: the kernel's `src/xenstore.rs` and the daemon's
  `daemon/src/server.rs` (the ring host they share, `engine/src/ring_host.rs`, separately);
- lines of shell and Python under tests/ and bench/;
- unsafe blocks (`unsafe {`), `unsafe impl` and `unsafe fn` per crate, tests not counted.

Functions are found by their `fn` line and end at the closing brace at the same
indentation, which is how rustfmt lays them out.
"""

import os
import re
import subprocess
import sys

FUNCTION = re.compile(r'^(\s*)(pub(\([a-z]+\))? )?(const )?(unsafe )?(extern "C" )?fn (\w+)')
NOT_PRODUCT = ("tests/", "fuzz/", "bench/")
CRATES = {
    "engine/": "xenstore-engine",
    "xen-hypercall/": "xen-hypercall",
    "stub-allocator/": "stub-allocator",
    "daemon/": "xenstored-linux",
    "client/": "xenstore-client",
    "bench/": "xenstore-bench",
    "fuzz/": "fuzz",
}


def tracked(root, pattern):
    output = subprocess.run(
        ["git", "-C", root, "ls-files", pattern], capture_output=True, text=True, check=True
    ).stdout
    return [path for path in output.split("\n") if path]


def is_product(path):
    return not (path.startswith(NOT_PRODUCT) or "/tests/" in path or path.endswith("/tests.rs"))


def functions(root, path):
    with open(os.path.join(root, path), encoding="utf-8") as source:
        lines = source.read().split("\n")
    for index, line in enumerate(lines):
        match = FUNCTION.match(line)
        if not match or line.rstrip().endswith(";"):
            continue
        closing = re.compile("^" + match.group(1) + r"\}\s*$")
        end = index + 1
        while end < len(lines) and not closing.match(lines[end]):
            end += 1
        yield end - index + 1, path, index + 1, match.group(7)


def line_count(root, path):
    with open(os.path.join(root, path), encoding="utf-8") as source:
        return sum(1 for _ in source)


def crate_of(path):
    for prefix, crate in CRATES.items():
        if path.startswith(prefix):
            return crate
    return "xenstore-stubdom (kernel)"


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.getcwd()
    rust = tracked(root, "*.rs")
    product = [path for path in rust if is_product(path)]

    found = sorted((f for path in rust for f in functions(root, path)), reverse=True)
    print("longest functions (all Rust):")
    for length, path, line, name in found[:5]:
        print(f"  {length:4} lines  {name}  {path}:{line}")
    found_product = [f for f in found if is_product(f[1])]
    print("longest product functions:")
    for length, path, line, name in found_product[:5]:
        print(f"  {length:4} lines  {name}  {path}:{line}")

    sizes = sorted(((line_count(root, path), path) for path in product), reverse=True)
    print("longest product source files:")
    for count, path in sizes[:5]:
        print(f"  {count:4} lines  {path}")

    print("front ends' serving code:")
    for path in ("src/xenstore.rs", "src/xen/ring_port.rs", "daemon/src/server.rs",
                 "daemon/src/sockets.rs", "daemon/src/platform.rs", "engine/src/ring_host.rs"):
        if os.path.exists(os.path.join(root, path)):
            print(f"  {line_count(root, path):4} lines  {path}")

    for kind in ("sh", "py"):
        files = [path for path in tracked(root, f"*.{kind}")
                 if path.startswith(("tests/", "bench/", ".ci/"))]
        total = sum(line_count(root, path) for path in files)
        print(f"{kind} under tests/, bench/, .ci/: {total} lines in {len(files)} files")

    counts = {}
    for path in product + [path for path in rust if path.startswith(("bench/", "fuzz/"))]:
        with open(os.path.join(root, path), encoding="utf-8") as source:
            text = source.read()
        entry = counts.setdefault(crate_of(path), [0, 0, 0])
        entry[0] += len(re.findall(r"\bunsafe \{", text))
        entry[1] += len(re.findall(r"\bunsafe impl\b", text))
        entry[2] += len(re.findall(r"\bunsafe fn\b", text))
    print("unsafe per crate, tests excluded (blocks / impls / fns):")
    for crate, (blocks, impls, fns) in sorted(counts.items()):
        print(f"  {crate:28} {blocks:4} / {impls:3} / {fns:3}")


if __name__ == "__main__":
    main()
