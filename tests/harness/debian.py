"""Debian packages for the Xen-in-QEMU harness: `apt-get download` and `dpkg -x`, never an
installation on the host.

Two kinds of archive:
  the host's     the machine's own apt configuration (Debian bookworm): Xen 4.17, the dom0
                 kernel, busybox. `apt-get update` runs at most once per run and not at all
                 when this harness ran it less than 6 hours ago (a stamp in the cache) or
                 the caller says it did (XENSTORE_APT_UPDATED=1).
  a private one  another suite (trixie: Xen 4.20) through an apt configuration of its own
                 under the cache (sources list, package lists, downloads), so that the
                 machine's apt configuration and state are never touched. Signed by the
                 Debian archive keys the host's debian-archive-keyring already holds.

Downloaded .deb files are kept in ${XENSTORE_CACHE_DIR:-~/.cache/xenstore-stubdom}/debs
(their names carry the version, so a security update is fetched once); a missing cache is
filled again.
"""

import glob
import os
import subprocess
import sys
import time

CACHE_ROOT = os.environ.get("XENSTORE_CACHE_DIR") or os.path.expanduser("~/.cache/xenstore-stubdom")
DEB_CACHE = os.path.join(CACHE_ROOT, "debs")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# How long a package-list update is trusted.
UPDATE_STAMP_SECONDS = 6 * 3600


class AptError(Exception):
    """What apt could not do, with its own words."""


def say(message):
    print(f"[xen-in-qemu] {message}", file=sys.stderr, flush=True)


class Archive:
    """One set of package lists: the host's (suite None) or a private suite's."""

    def __init__(self, suite=None):
        self.suite = suite
        self.options = []
        if suite is None:
            self.state = os.path.join(CACHE_ROOT, "xen-in-qemu")
            self.stamp = os.path.join(self.state, "apt-updated")
        else:
            self.state = os.path.join(CACHE_ROOT, f"apt-{suite}")
            self.stamp = os.path.join(self.state, "updated")
            sources = os.path.join(self.state, "sources.list")
            self.options = [
                "-o", f"Dir::Etc::SourceList={sources}",
                "-o", "Dir::Etc::SourceParts=/dev/null",
                "-o", "Dir::Etc::Preferences=/dev/null",
                "-o", "Dir::Etc::PreferencesParts=/dev/null",
                "-o", f"Dir::State::Lists={self.state}/lists",
                "-o", "Dir::State::status=/dev/null",
                "-o", f"Dir::Cache={self.state}",
                "-o", "Dir::Cache::pkgcache=",
                "-o", "Dir::Cache::srcpkgcache=",
                "-o", "APT::Architecture=amd64",
            ]
        self.updated = False

    def _write_sources(self):
        os.makedirs(os.path.join(self.state, "lists", "partial"), exist_ok=True)
        os.makedirs(os.path.join(self.state, "archives", "partial"), exist_ok=True)
        lines = [
            f"deb [signed-by={KEYRING}] http://deb.debian.org/debian {self.suite} main",
            f"deb [signed-by={KEYRING}] http://deb.debian.org/debian {self.suite}-updates main",
            f"deb [signed-by={KEYRING}] http://deb.debian.org/debian-security {self.suite}-security main",
        ]
        with open(os.path.join(self.state, "sources.list"), "w") as f:
            f.write("\n".join(lines) + "\n")

    def update(self):
        """Current package lists: `apt-get update` unless done recently. A failed update of
        the host's lists goes on with the lists present (as apt itself would); a private
        suite without lists cannot go on."""
        if self.updated:
            return
        fresh = os.path.exists(self.stamp) and time.time() - os.path.getmtime(self.stamp) < UPDATE_STAMP_SECONDS
        if self.suite is None and os.environ.get("XENSTORE_APT_UPDATED") == "1":
            fresh = True
        if not fresh:
            if self.suite is not None:
                self._write_sources()
            say(f"apt-get update ({self.suite or 'the host'}'s package lists)")
            done = subprocess.run(["apt-get", *self.options, "update", "-qq"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)
            if done.returncode == 0:
                os.makedirs(os.path.dirname(self.stamp), exist_ok=True)
                open(self.stamp, "w").close()
            elif self.suite is None:
                sys.stderr.write(done.stderr.decode(errors="replace"))
                say("warning: apt-get update failed; continuing with the package lists already present")
            else:
                raise AptError(f"apt-get update for {self.suite} failed:\n{done.stderr.decode(errors='replace')}")
        if self.suite is None:
            # debian-packages.sh and nested runs need not update again.
            os.environ["XENSTORE_APT_UPDATED"] = "1"
        self.updated = True

    def _apt(self, tool, *arguments):
        done = subprocess.run([tool, *self.options, *arguments], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")

    def candidates(self, packages):
        """{package: candidate version}; a package without one raises AptError."""
        _, out, _ = self._apt("apt-cache", "policy", *packages)
        versions, name = {}, None
        for line in out.splitlines():
            if line and not line.startswith(" ") and line.endswith(":"):
                name = line[:-1]
            elif line.startswith("  Candidate: ") and name:
                versions[name] = line.split(": ", 1)[1].strip()
        missing = [p for p in packages if versions.get(p) in (None, "(none)")]
        if missing:
            where = f"the {self.suite} lists" if self.suite else "the apt lists"
            raise AptError(f"no installable version in {where} for: {' '.join(missing)} (apt-cache policy)")
        return {p: versions[p] for p in packages}

    def depends(self, package):
        """The packages `package` depends on (first of each alternative)."""
        _, out, _ = self._apt("apt-cache", "depends", "--no-recommends", "--no-suggests", "--no-conflicts",
                              "--no-breaks", "--no-replaces", "--no-enhances", package)
        names = []
        for line in out.splitlines():
            stripped = line.strip()
            if stripped.startswith(("Depends: ", "PreDepends: ", "|Depends: ", "|PreDepends: ")):
                name = stripped.split(": ", 1)[1]
                if not name.startswith("<"):
                    names.append(name.split(":")[0])
        return names

    def library_closure(self, roots):
        """`roots` and every library package (name lib*) they depend on, transitively: the
        shared libraries a suite's programs need, whatever the host holds."""
        seen, todo = [], list(roots)
        while todo:
            package = todo.pop(0)
            if package in seen:
                continue
            seen.append(package)
            todo.extend(d for d in self.depends(package) if d.startswith("lib") and d not in seen)
        return seen

    def unpack(self, versions, root):
        """Downloads (unless cached) and unpacks each `package=version` into root."""
        os.makedirs(DEB_CACHE, exist_ok=True)
        os.makedirs(root, exist_ok=True)
        for package, version in versions.items():
            file_version = version.replace(":", "%3a")
            found = sorted(glob.glob(os.path.join(DEB_CACHE, f"{package}_{file_version}_*.deb")))
            if not found:
                # As root, apt warns that the download is unsandboxed: its output is shown
                # only on failure.
                done = subprocess.run(["apt-get", *self.options, "download", "-qq", f"{package}={version}"],
                                      cwd=DEB_CACHE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                found = sorted(glob.glob(os.path.join(DEB_CACHE, f"{package}_{file_version}_*.deb")))
                if done.returncode != 0 or not found:
                    raise AptError(f"apt-get download {package}={version} failed:\n{done.stdout.decode(errors='replace')}")
            subprocess.run(["dpkg", "-x", found[0], root], check=True)
