"""The base of a Xen-in-QEMU boot, one per Xen version: the hypervisor, Debian's dom0 kernel
and the dom0 initramfs (busybox, the Xen tools and every shared library they need, the Xen
kernel modules) without the scenario.

Xen versions (`--xen`):
  4.17  Debian bookworm's packages, from the host's apt lists; libraries from the host
        (the host is bookworm too).
  4.20  Debian trixie's packages through a private apt configuration (debian.py), with
        trixie's C library and every library package they depend on: nothing of the host's
        C library goes in.
  4.22  a build of the public Xen tree, the DESTDIR tarball in ../shared/xen (or
        $XEN_4_22_DIST); it links against bookworm's libraries, taken from the host.
The dom0 kernel, its modules and busybox are bookworm's for every version.

A base is cached under ${XENSTORE_CACHE_DIR:-~/.cache/xenstore-stubdom}/xen-in-qemu/
base-VERSION-KEY, KEY made of every package's version (or the tarball's size and time),
the host's libraries and BASE_FORMAT; it is built again whenever one of them changes.
"""

import hashlib
import os
import shutil
import struct
import subprocess
import tempfile

from . import common, debian
from .debian import say
from .xen_qemu import write_cpio

# Bump when the layout of a cached base changes.
BASE_FORMAT = 3
CACHE_DIR = os.path.join(debian.CACHE_ROOT, "xen-in-qemu")

# The Xen library packages of Debian's tools, by suite (bookworm's, trixie's names).
XEN_LIBRARIES = ["libxencall1", "libxendevicemodel1", "libxenevtchn1", "libxenforeignmemory1",
                 "libxengnttab1", "libxenhypfs1", "libxenstore4", "libxentoolcore1", "libxentoollog1", "libyajl2"]
# The host's packages whose libraries may be copied into a dom0 or a guest (part of the key).
HOST_LIBRARY_PACKAGES = ["libc6", "libgcc-s1", "zlib1g", "liblzma5", "libzstd1", "libuuid1", "libbz2-1.0"]


class Version:
    """One Xen version: where its parts come from and where its tools are in dom0."""

    def __init__(self, name, suite, packages, hypervisor, tools_path, xl, test_xenstore, dist=None,
                 host_packages=()):
        self.name = name
        # Bookworm packages the version's programs need beyond the host's own libraries.
        self.host_packages = list(host_packages)
        # None: the host's apt lists; else a private suite; "dist": the shared tarball.
        self.suite = suite
        self.packages = packages
        self.hypervisor = hypervisor  # gzip'ed hypervisor inside the unpacked tree
        self.tools_path = tools_path  # dom0 folders put first on PATH (':'-separated)
        self.xl = xl
        self.test_xenstore = test_xenstore
        self.dist = dist

    def dist_tarball(self):
        path = os.environ.get("XEN_4_22_DIST") or os.path.join(
            os.path.dirname(common.REPO), "shared", "xen", "xen-4.22.0-x86_64-dist.tar.xz")
        return os.path.abspath(path)


VERSIONS = {
    "4.17": Version("4.17", None,
                    ["xen-hypervisor-4.17-amd64", "xen-utils-4.17", "xen-utils-common", "xenstore-utils",
                     "libxenmisc4.17", *XEN_LIBRARIES],
                    "boot/xen-4.17-amd64.gz", "/usr/lib/xen-4.17/bin",
                    "/usr/lib/xen-4.17/bin/xl", "/usr/lib/xen-4.17/bin/test-xenstore"),
    "4.20": Version("4.20", "trixie",
                    ["xen-hypervisor-4.20-amd64", "xen-utils-4.20", "xen-utils-common", "xenstore-utils",
                     "libxenmisc4.20", *XEN_LIBRARIES, "libc6", "libgcc-s1",
                     # needed but not declared (zlib1g by name, libcom-err2 is essential)
                     "zlib1g", "libcom-err2"],
                    "boot/xen-4.20-amd64.gz", "/usr/lib/xen-4.20/bin",
                    "/usr/lib/xen-4.20/bin/xl", "/usr/lib/xen-4.20/bin/test-xenstore"),
    "4.22": Version("4.22", "dist", [], "boot/xen-4.22.0.gz", "/usr/lib/xen/bin:/usr/lib/xen/tests",
                    "/usr/sbin/xl", "/usr/lib/xen/tests/test-xenstore", dist=True, host_packages=["libyajl2"]),
}
DEFAULT_VERSION = "4.17"
KERNEL_MODULES = ["xen-evtchn", "xen-gntdev", "xen-gntalloc", "xen-privcmd", "xenfs/xenfs"]


class BaseError(Exception):
    """Why a base cannot be built (the run fails with this message)."""


# --- shared libraries ------------------------------------------------------------------

def elf_needs(path):
    """(interpreter or None, [DT_NEEDED names]) of a 64-bit ELF file; None if not one."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if data[:4] != b"\x7fELF" or len(data) < 64 or data[4] != 2:
        return None
    phoff = struct.unpack_from("<Q", data, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    loads, dynamic, interpreter = [], None, None
    for index in range(phnum):
        offset = phoff + index * phentsize
        if offset + 56 > len(data):
            return None
        kind, _, p_offset, p_vaddr, _, p_filesz, _, _ = struct.unpack_from("<IIQQQQQQ", data, offset)
        if kind == 1:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif kind == 2:
            dynamic = (p_offset, p_filesz)
        elif kind == 3:
            interpreter = data[p_offset:p_offset + p_filesz].rstrip(b"\0").decode()
    if dynamic is None:
        return interpreter, []
    strtab, needed = None, []
    for offset in range(dynamic[0], min(dynamic[0] + dynamic[1], len(data) - 15), 16):
        tag, value = struct.unpack_from("<qQ", data, offset)
        if tag == 0:
            break
        if tag == 1:
            needed.append(value)
        elif tag == 5:
            strtab = value
    base = next((strtab - va + off for va, off, size in loads if strtab is not None and va <= strtab < va + size), None)
    if base is None:
        return interpreter, []
    names = []
    for value in needed:
        end = data.index(b"\0", base + value)
        names.append(data[base + value:end].decode())
    return interpreter, names


LIBRARY_DIRS = ["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib", "usr/lib", "lib64"]


def complete_libraries(root, from_host):
    """Makes every ELF program and library in root find what it needs inside root: a
    library root lacks is copied from the host (from_host) at the same path, or the build
    fails naming it. Also the loader, and the libraries glibc opens at run time (libgcc_s
    for pthread_cancel, libnss_files)."""
    def in_root(name):
        return next((d for d in LIBRARY_DIRS if os.path.exists(os.path.join(root, d, name))), None)

    def from_host_path(name):
        return next((os.path.join("/", d, name) for d in LIBRARY_DIRS if os.path.exists(os.path.join("/", d, name))), None)

    def copy_from_host(path):
        target = os.path.join(root, path.lstrip("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.realpath(path), target)
        return target

    extra = ["libgcc_s.so.1", "libnss_files.so.2"]
    missing = []
    pending = []
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path) and os.access(path, os.X_OK) or ".so" in name:
                pending.append(path)
    for name in extra:
        if not in_root(name) and from_host and from_host_path(name):
            pending.append(copy_from_host(from_host_path(name)))
    checked = set()
    while pending:
        path = pending.pop()
        if path in checked or os.path.islink(path):
            continue
        checked.add(path)
        needs = elf_needs(path)
        if needs is None:
            continue
        interpreter, names = needs
        if interpreter and not os.path.exists(os.path.join(root, interpreter.lstrip("/"))):
            if from_host and os.path.exists(interpreter):
                copy_from_host(interpreter)
            else:
                missing.append(f"{interpreter} (loader of /{os.path.relpath(path, root)})")
        for name in names:
            if in_root(name):
                continue
            host = from_host_path(name) if from_host else None
            if host is None:
                missing.append(f"{name} (needed by /{os.path.relpath(path, root)})")
                continue
            pending.append(copy_from_host(host))
    if missing:
        raise BaseError("shared libraries not found" + (" on the host or" if from_host else "") +
                        " in the packages: " + ", ".join(sorted(set(missing))))


def remove_dangling_links(root):
    """Removes the links under root that lead nowhere (Debian's xen-utils-wrapper links)."""
    for directory, _, files in os.walk(root):
        for name in files:
            full = os.path.join(directory, name)
            if os.path.islink(full) and not os.path.exists(full):
                os.unlink(full)


# --- the base ----------------------------------------------------------------------------

class Base:
    """A built base: xen, vmlinuz, busybox, base.cpio.gz and (on demand) vmlinux."""

    def __init__(self, path, version):
        self.path = path
        self.version = version

    def file(self, name):
        return os.path.join(self.path, name)

    def vmlinux(self):
        """The dom0 kernel decompressed (an ELF): xl then only copies it for a PVH guest."""
        out = self.file("vmlinux")
        if not (os.path.exists(out) and os.path.getsize(out) > 0):
            from .xen_qemu import extract_vmlinux
            temporary = f"{out}.tmp.{os.getpid()}"
            if extract_vmlinux(self.file("vmlinuz"), temporary) != 0:
                raise BaseError(f"cannot extract vmlinux from {self.file('vmlinuz')}")
            os.replace(temporary, out)
        return out


def host_archive():
    archive = debian.Archive()
    archive.update()
    return archive


def kernel_package(archive):
    """The versioned kernel package linux-image-amd64 depends on (bookworm: 6.1)."""
    for name in archive.depends("linux-image-amd64"):
        if name.startswith("linux-image-") and name.endswith("-amd64") and name[12:13].isdigit():
            return name
    raise BaseError("cannot resolve the kernel package linux-image-amd64 depends on "
                    "(apt-cache depends linux-image-amd64); is the bookworm package list available?")


def prepare(version_name):
    """The base of `version_name`, from the cache or built now."""
    version = VERSIONS[version_name]
    host = host_archive()
    kernel = kernel_package(host)
    kernel_version = kernel[len("linux-image-"):]
    host_packages = host.candidates([kernel, "busybox-static", *version.host_packages])
    xen_archive = None
    if version.suite is None:
        xen_archive = host
        xen_packages = host.candidates(version.packages)
    elif version.dist:
        tarball = version.dist_tarball()
        if not os.path.isfile(tarball):
            raise BaseError(f"Xen {version.name} cannot run here: no build at {tarball} (set XEN_4_22_DIST)")
        stat = os.stat(tarball)
        xen_packages = {"dist": f"{os.path.basename(tarball)}:{stat.st_size}:{int(stat.st_mtime)}"}
    else:
        xen_archive = debian.Archive(version.suite)
        xen_archive.update()
        xen_packages = xen_archive.candidates(xen_archive.library_closure(version.packages))
    host_libraries = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package}=${Version} ", *HOST_LIBRARY_PACKAGES],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.decode()
    listing = " ".join(f"{p}={v}" for p, v in sorted({**host_packages, **xen_packages}.items()))
    key = hashlib.sha256(f"format={BASE_FORMAT} xen={version.name} {listing} {host_libraries}".encode()).hexdigest()[:16]
    path = os.path.join(CACHE_DIR, f"base-{version.name}-{key}")
    base = Base(path, version)
    if all(os.path.isfile(base.file(n)) for n in ("base.cpio.gz", "xen", "vmlinuz", "busybox")):
        say(f"using cached base {path}")
        return base
    os.makedirs(CACHE_DIR, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="xen-in-qemu-base.") as work:
        build(version, work, host, host_packages, kernel_version, xen_archive, xen_packages, path, listing)
    say(f"base ready: {path}")
    return base


def build(version, work, host, host_packages, kernel_version, xen_archive, xen_packages, path, listing):
    stage, root = os.path.join(work, "stage"), os.path.join(work, "root")
    xen_stage = os.path.join(work, "xen-stage")
    say(f"Xen {version.name}: fetching and unpacking {len(host_packages) + len(xen_packages)} packages"
        f" (cache: {debian.DEB_CACHE})")
    host.unpack(host_packages, stage)
    for package in version.host_packages:
        host.unpack({package: host_packages[package]}, xen_stage)
    if version.dist:
        os.makedirs(xen_stage, exist_ok=True)
        subprocess.run(["tar", "-xJf", version.dist_tarball(), "-C", xen_stage], check=True)
    else:
        xen_archive.unpack(xen_packages, xen_stage)
    say("building the dom0 base initramfs")
    for folder in ["bin", "sbin", "dev", "etc", "proc", "sys", "run", "tmp", "root", "usr/bin", "usr/sbin",
                   "var/lib/xen", "var/log/xen"]:
        os.makedirs(os.path.join(root, folder), exist_ok=True)
    # The whole Xen tree but what a dom0 initramfs never uses.
    for folder in ["usr", "etc", "lib", "lib64"]:
        source = os.path.join(xen_stage, folder)
        if os.path.isdir(source):
            shutil.copytree(source, os.path.join(root, folder), symlinks=True, dirs_exist_ok=True)
    for unused in ["usr/share", "usr/include", "usr/lib/python3", "usr/lib/xen/boot", "etc/init.d",
                   "usr/lib/x86_64-linux-gnu/gconv", "usr/lib/debug", "usr/lib/systemd", "lib/systemd",
                   # pygrub's Python module and file-system readers, and hvmloader
                   f"usr/lib/xen-{version.name}/lib", f"usr/lib/xen-{version.name}/boot"]:
        shutil.rmtree(os.path.join(root, unused), ignore_errors=True)
    remove_dangling_links(root)
    shutil.copy2(os.path.join(stage, "bin", "busybox"), os.path.join(root, "bin", "busybox"))
    module_dir = f"lib/modules/{kernel_version}/kernel/drivers/xen"
    for module in KERNEL_MODULES:
        source = os.path.join(stage, module_dir, module + ".ko")
        if not os.path.isfile(source):
            raise BaseError(f"kernel module {module_dir}/{module}.ko missing from the kernel package")
        target = os.path.join(root, module_dir, module + ".ko")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(source, target)
    with open(os.path.join(root, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")
    with open(os.path.join(root, "etc", "group"), "w") as f:
        f.write("root:x:0:\ntty:x:5:\n")
    own_loader = os.path.join(root, "usr", "lib", "x86_64-linux-gnu", "ld-linux-x86-64.so.2")
    if not os.path.exists(os.path.join(root, "lib64", "ld-linux-x86-64.so.2")) and os.path.exists(own_loader):
        # A merged-/usr suite (trixie) ships its loader under /usr only.
        os.makedirs(os.path.join(root, "lib64"), exist_ok=True)
        os.symlink("../usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", os.path.join(root, "lib64", "ld-linux-x86-64.so.2"))
    complete_libraries(root, from_host=version.suite != "trixie")
    out = f"{path}.tmp-{os.getpid()}"
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    write_cpio(os.path.join(out, "base.cpio.gz"), root, ["dev/console:c:5:1"])
    with open(os.path.join(xen_stage, version.hypervisor), "rb") as compressed, \
            open(os.path.join(out, "xen"), "wb") as plain:
        subprocess.run(["gzip", "-dc"], stdin=compressed, stdout=plain, check=True)
    shutil.copy2(os.path.join(stage, "boot", f"vmlinuz-{kernel_version}"), os.path.join(out, "vmlinuz"))
    shutil.copy2(os.path.join(stage, "bin", "busybox"), os.path.join(out, "busybox"))
    with open(os.path.join(out, "versions"), "w") as f:
        f.write(listing.replace(" ", "\n") + "\n")
    # Only the current base of each version is kept (a parallel run may have just put the
    # same one in place).
    prefix = f"base-{version.name}-"
    for name in os.listdir(CACHE_DIR):
        if name.startswith(prefix) and os.path.join(CACHE_DIR, name) != path and ".tmp-" not in name:
            shutil.rmtree(os.path.join(CACHE_DIR, name), ignore_errors=True)
    try:
        os.rename(out, path)
    except OSError:
        shutil.rmtree(out, ignore_errors=True)
