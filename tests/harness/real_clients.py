"""Runs Debian bookworm's real xenstore clients and Xen's test-xenstore against our xenstored.

Usage: tests/real-clients/run.sh   (= python3 tests/harness real-clients; as root on Debian
       bookworm: needs apt-get)
Environment:
  CARGO_TARGET_DIR            honoured when building the daemon
  XENSTORE_REAL_CLIENTS_DIR   work directory (default: a fresh temporary one, removed at exit)
  XENSTORE_RANDOM_SECONDS     duration of test-xenstore's random mode (default 10)
  XENSTORE_SKIP_BUILD=1       use the already built release binary

The packages are unpacked with tests/lib/debian-packages.sh, never installed. Every check
prints PASS or FAIL; the last line is "N passed, M failed"; the exit status is non-zero
when any check failed. A check that cannot run (a package that does not download, a daemon
that does not build or listen) fails, and the checks that depend on it are not counted.
"""

import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from harness import common
from harness.checks import Checks, Stop

# Debian bookworm's clients (xenstore-control needs libxenctrl from libxenmisc).
PACKAGES = [
    "xenstore-utils", "xen-utils-4.17", "libxenstore4", "libxentoolcore1", "libxenmisc4.17",
    "libxencall1", "libxendevicemodel1", "libxenevtchn1", "libxenforeignmemory1", "libxengnttab1",
    "libxenhypfs1", "libxentoollog1", "libyajl2",
]
# Where the unpacked packages keep the programs that are not in usr/bin.
XEN_LIBEXEC = "usr/lib/xen-4.17/bin"
# Every client call is bounded: a client blocked on a broken daemon must fail its check.
CLIENT_TIMEOUT = 20


# ---------------------------------------------------------------------------------------
# The checks, as data. A command's first word is a program: xenstore-control and
# test-xenstore come from the unpacked xen-utils-4.17, xenstore-guest is the simulated guest
# of the xenstore-client crate (daemon/README.md), anything else is in the unpacked usr/bin; `{run}` in a
# word is the daemon's run directory.


@dataclass
class Prints:
    """The command exits with `status` and prints exactly `out` on stdout (a newline is added
    unless `out` is empty or `raw`); `lines`: only its stdout lines matching this regex count."""
    name: str
    out: str
    argv: list
    raw: bool = False
    status: int = 0
    lines: str = None


@dataclass
class Fails:
    """The command exits non-zero (a client stopped at its time limit counts as failing)."""
    name: str
    argv: list


@dataclass
class Matches:
    """The command succeeds and a line of its output (stdout and stderr) matches `regex`."""
    name: str
    regex: str
    argv: list


@dataclass
class Watch:
    """`argv` (a watch) runs in the background; once it printed something (its initial
    event), the commands of `then` run one after another; the watch must then exit 0 having
    printed exactly `out`."""
    name: str
    argv: list
    then: list
    out: str


@dataclass
class Logged:
    """`text` appears in the daemon's trace (-T) or its stderr."""
    name: str
    text: str


def prints(name, out, *argv, **kw):
    return Prints(name, out, list(argv), **kw)


def fails(name, *argv):
    return Fails(name, list(argv))


def matches(name, regex, *argv):
    return Matches(name, regex, list(argv))


CHECKS = [
    # xenstore-write / -read / -exists / -list / -ls.
    prints("xenstore-write several pairs", "", "xenstore-write", "/rc/a", "1", "/rc/b", "two words"),
    prints("xenstore-read", "1", "xenstore-read", "/rc/a"),
    prints("xenstore-read several keys", "1\ntwo words", "xenstore-read", "/rc/a", "/rc/b"),
    prints("xenstore-read -p", "/rc/a: 1", "xenstore-read", "-p", "/rc/a"),
    fails("xenstore-read missing node", "xenstore-read", "/rc/missing"),
    prints("xenstore-write escapes", "", "xenstore-write", "/rc/escaped", r"a\tb"),
    prints("xenstore-read sanitises", r"a\tb", "xenstore-read", "/rc/escaped"),
    prints("xenstore-read -R is raw", "a\tb", "xenstore-read", "-R", "/rc/escaped", raw=True),
    prints("xenstore-write -R keeps backslashes", "", "xenstore-write", "-R", "/rc/literal", r"x\ty"),
    prints("xenstore-read -R of a literal value", r"x\ty", "xenstore-read", "-R", "/rc/literal", raw=True),
    prints("xenstore-exists", "", "xenstore-exists", "/rc/a", "/rc/b"),
    fails("xenstore-exists missing node", "xenstore-exists", "/rc/missing"),
    prints("xenstore-write nested", "", "xenstore-write", "/rc/dir/x", "10", "/rc/dir/y", "20"),
    prints("xenstore-list", "a\nb\nescaped\nliteral\ndir", "xenstore-list", "/rc"),
    prints("xenstore-list -p", "/rc/dir/x\n/rc/dir/y", "xenstore-list", "-p", "/rc/dir"),
    prints("xenstore-ls", 'x = "10"\ny = "20"', "xenstore-ls", "/rc/dir"),
    prints("xenstore-write for ls nesting", "", "xenstore-write", "/rc3/dir/x", "10", "/rc3/dir/y", "20"),
    prints("xenstore-ls nested", 'dir = ""\n x = "10"\n y = "20"', "xenstore-ls", "/rc3"),
    prints("xenstore-ls -f", '/rc/dir/x = "10"\n/rc/dir/y = "20"', "xenstore-ls", "-f", "/rc/dir"),
    prints("xenstore-ls -f -p", '/rc/dir/x = "10"   (n0)\n/rc/dir/y = "20"   (n0)',
           "xenstore-ls", "-f", "-p", "/rc/dir"),
    fails("xenstore-ls missing node", "xenstore-ls", "/rc/missing"),

    # xenstore-chmod.
    prints("xenstore-chmod", "", "xenstore-chmod", "/rc/dir/x", "n0", "r5", "w7"),
    prints("xenstore-ls -f -p after chmod", '/rc/dir/x = "10"   (n0,r5,w7)\n/rc/dir/y = "20"   (n0)',
           "xenstore-ls", "-f", "-p", "/rc/dir"),
    prints("xenstore-chmod -r", "", "xenstore-chmod", "-r", "/rc/dir", "b0"),
    prints("xenstore-ls -f -p after chmod -r", '/rc/dir/x = "10"   (b0)\n/rc/dir/y = "20"   (b0)',
           "xenstore-ls", "-f", "-p", "/rc/dir"),
    prints("xenstore-write for chmod -u", "", "xenstore-write", "/rcu/p/q", "v"),
    prints("xenstore-chmod -u", "", "xenstore-chmod", "-u", "/rcu/p/q", "n0", "r9"),
    prints("xenstore-ls -f -p after chmod -u", '/rcu = ""   (n0,r9)\n/rcu/p = ""   (n0,r9)\n/rcu/p/q = "v"   (n0,r9)',
           "xenstore-ls", "-f", "-p", "/", lines="^/rcu"),
    fails("xenstore-chmod bad permission", "xenstore-chmod", "/rc/a", "x5"),

    # xenstore-rm.
    prints("xenstore-rm", "", "xenstore-rm", "/rc/b"),
    fails("xenstore-read removed node", "xenstore-read", "/rc/b"),
    prints("xenstore-rm of a missing node with a parent", "", "xenstore-rm", "/rc/b"),
    fails("xenstore-rm of a node without a parent", "xenstore-rm", "/rc/none/none"),
    prints("xenstore-write for rm -t", "", "xenstore-write", "/rct/keep", "1", "/rct/d1/d2/leaf", "2"),
    prints("xenstore-rm -t", "", "xenstore-rm", "-t", "/rct/d1/d2/leaf"),
    prints("xenstore-rm -t removed empty parents", "keep", "xenstore-list", "/rct"),
    prints("xenstore-rm subtree", "", "xenstore-rm", "/rct"),
    fails("xenstore-exists removed subtree", "xenstore-exists", "/rct/keep"),

    # xenstore-watch: its initial event, then one per write below the path.
    Watch("xenstore-watch -n", ["xenstore-watch", "-n", "3", "/rcw"],
          [["xenstore-write", "/rcw/x", "1"], ["xenstore-write", "/rcw/x/y", "2"]],
          "/rcw\n/rcw/x\n/rcw/x/y"),

    # The multi-call binary.
    prints("xenstore write", "", "xenstore", "write", "/rcm/k", "v"),
    prints("xenstore read", "v", "xenstore", "read", "/rcm/k"),
    prints("xenstore exists", "", "xenstore", "exists", "/rcm/k"),
    prints("xenstore list", "k", "xenstore", "list", "/rcm"),
    prints("xenstore ls", 'k = "v"', "xenstore", "ls", "/rcm"),
    prints("xenstore chmod", "", "xenstore", "chmod", "/rcm/k", "n0", "r1"),
    prints("xenstore ls -f -p", '/rcm/k = "v"   (n0,r1)', "xenstore", "ls", "-f", "-p", "/rcm"),
    prints("xenstore rm", "", "xenstore", "rm", "/rcm"),
    fails("xenstore exists after rm", "xenstore", "exists", "/rcm"),

    # A simulated guest (daemon/README.md) seen through the real clients.
    prints("prepare a guest home", "", "xenstore-write", "/local/domain/42", ""),
    prints("give the guest its home", "", "xenstore-chmod", "/local/domain/42", "n42"),
    prints("xenstore-guest --introduce write", "",
           "xenstore-guest", "--rundir", "{run}", "--domid", "42", "--introduce", "write", "name", "guest42"),
    prints("xenstore-read of a guest's node", "guest42", "xenstore-read", "/local/domain/42/name"),
    prints("xenstore-ls -f -p of a guest's node", '/local/domain/42/name = "guest42"   (n42)',
           "xenstore-ls", "-f", "-p", "/local/domain/42"),
    # xenstore-guest exits 1 when the daemon answers with an error.
    prints("xenstore-guest is refused outside its home", "ERROR EACCES",
           "xenstore-guest", "--rundir", "{run}", "--domid", "42", "read", "/local/domain/0", status=1),
    Watch("xenstore-watch sees the simulated death", ["xenstore-watch", "-n", "2", "@releaseDomain"],
          [["xenstore-guest", "--rundir", "{run}", "--domid", "42", "--destroy"]],
          "@releaseDomain\n@releaseDomain"),
    fails("the dead guest's nodes are gone", "xenstore-exists", "/local/domain/42/name"),

    # xenstore-control.
    matches("xenstore-control help", "^quota", "xenstore-control", "help"),
    matches("xenstore-control log", ".", "xenstore-control", "log"),
    prints("xenstore-control log off", "OK", "xenstore-control", "log", "off"),
    prints("xenstore-control log on", "OK", "xenstore-control", "log", "on"),
    matches("xenstore-control quota", "^nodes +: +1000 ", "xenstore-control", "quota"),
    matches("xenstore-control quota-soft", "^memory +: +2097152 ", "xenstore-control", "quota-soft"),
    prints("xenstore-control quota set", "OK", "xenstore-control", "quota", "set", "nodes", "2000"),
    matches("xenstore-control quota after set", "^nodes +: +2000 ", "xenstore-control", "quota"),
    prints("xenstore-control quota set back", "OK", "xenstore-control", "quota", "set", "nodes", "1000"),
    matches("xenstore-control quota <domid>", "^nodes +: +[0-9]+", "xenstore-control", "quota", "0"),
    matches("xenstore-control memreport", ".", "xenstore-control", "memreport"),
    prints("xenstore-control check", "OK", "xenstore-control", "check"),
    prints("xenstore-control print", "OK", "xenstore-control", "print", "hello from run.sh"),
    fails("xenstore-control unknown command", "xenstore-control", "no-such-command"),
    Logged("xenstore-control print reaches the log", "hello from run.sh"),
]


# ---------------------------------------------------------------------------------------
# Running them.


def show(data, limit):
    """Output for a FAIL line: quoted, cut to `limit` bytes, on one line."""
    return repr(data[:limit].decode("utf-8", errors="replace"))


@dataclass
class Env:
    work: str
    run: str
    root: str
    programs: dict = field(default_factory=dict)

    def argv(self, words):
        first = self.programs.get(words[0], os.path.join(self.root, "usr", "bin", words[0]))
        return [first] + [w.replace("{run}", self.run) for w in words[1:]]


def run_check(checks, env, c):
    if isinstance(c, Prints):
        r = common.run(env.argv(c.argv), CLIENT_TIMEOUT)
        got = r.out
        if c.lines is not None:
            got = b"".join(line for line in got.splitlines(keepends=True)
                           if re.search(c.lines, line.decode("utf-8", errors="replace")))
        want = (c.out + ("\n" if c.out and not c.raw else "")).encode()
        if r.status != c.status:
            expected = "" if c.status == 0 else f" (expected {c.status})"
            checks.fail(c.name, f"exit status {r.status}{expected}: {r.err_text(300)}")
        else:
            checks.check(c.name, got == want, f"expected {show(want, 600)}, got {show(got, 600)}")
    elif isinstance(c, Fails):
        r = common.run(env.argv(c.argv), CLIENT_TIMEOUT, merge=True)
        checks.check(c.name, r.status != 0, f"succeeded: {r.text(300)}")
    elif isinstance(c, Matches):
        r = common.run(env.argv(c.argv), CLIENT_TIMEOUT, merge=True)
        if r.status != 0:
            checks.fail(c.name, f"exit status {r.status}: {r.text(300)}")
        else:
            checks.check(c.name, re.search(c.regex, r.text(), re.MULTILINE) is not None,
                         f"no line matches /{c.regex}/ in {show(r.out, 600)}")
    elif isinstance(c, Watch):
        run_watch(checks, env, c)
    elif isinstance(c, Logged):
        found = False
        for name in ("trace", "daemon.log"):
            try:
                with open(os.path.join(env.work, name), "rb") as f:
                    found |= c.text.encode() in f.read()
            except OSError:
                pass
        checks.check(c.name, found)
    else:
        raise TypeError(c)


def start_watch(env, argv, path):
    """Starts `argv` (a watch) with its output in `path`; returns once it printed its
    initial event (the watch is registered), or after 5 s. Raises OSError."""
    with open(path, "wb") as out:
        watch = subprocess.Popen(env.argv(argv), stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    for _ in range(100):
        if os.path.getsize(path) > 0:
            break
        time.sleep(0.05)
    return watch


def finish_watch(watch, path, timeout):
    """Waits for the watch to exit (killed after `timeout` s: status TIMED_OUT); returns its
    status and output."""
    try:
        status = watch.wait(timeout=max(0.0, timeout))
    except subprocess.TimeoutExpired:
        common.kill_group(watch)
        watch.wait()
        status = common.TIMED_OUT
    with open(path, "rb") as f:
        return status, f.read().rstrip(b"\n")


def run_watch(checks, env, c):
    path = os.path.join(env.work, "watch")
    deadline = time.monotonic() + CLIENT_TIMEOUT
    try:
        watch = start_watch(env, c.argv, path)
    except OSError as e:
        checks.fail(c.name, f"cannot run {c.argv[0]}: {e}")
        return
    statuses = [common.run(env.argv(words), CLIENT_TIMEOUT, merge=True).status for words in c.then]
    status, got = finish_watch(watch, path, deadline - time.monotonic())
    detail = f"got {show(got, 600)}"
    if status != 0:
        detail += f", exit status {status}"
    if any(statuses):
        detail += f" (the commands after it exited with {statuses})"
    checks.check(c.name, status == 0 and got == c.out.encode(), detail)


def test_xenstore(checks, env, random_seconds):
    """Xen's test-xenstore: every test on its own, then random mode. 4.17 always exits 0, so
    the output decides: a passing test prints "<name>: <n> ns", a failing one "<name>: failed
    ..."."""
    program = env.programs["test-xenstore"]
    listing = common.run([program, "-l"], 60, merge=True)
    names = []
    for line in listing.text().splitlines():
        name = line.split(":", 1)[0].rstrip(" ")
        if name:
            names.append(name)
    checks.check(f"test-xenstore -l lists {len(names)} tests" if len(names) >= 12 else "test-xenstore -l",
                 len(names) >= 12, listing.text())
    for name in names:
        r = common.run([program, "-t", name], 60, merge=True)
        checks.check(f"test-xenstore -t '{name}'",
                     re.search(rf"^{re.escape(name)} *: [0-9]+ ns$", r.text(), re.MULTILINE) is not None,
                     r.text())
    r = common.run([program, "-r", str(random_seconds)], random_seconds + 60, merge=True)
    checks.check(f"test-xenstore -r {random_seconds}", r.status == 0 and "failed" not in r.text(),
                 f"status {r.status}: {r.text(600)}")


def live_update(checks, env, daemon, daemon_path, log_path):
    """Debian's `xenstore-control live-update` against the daemon (docs/live-update.md,
    "The daemon"): with no `/tool/xenstored/domid` it names the new executable with `-f`,
    and the daemon replaces itself with it. A missing file is refused and the old daemon
    serves on; then the daemon's own binary: the same process (now with -U) keeps the
    store, its socket and a client's watch."""
    control = env.programs["xenstore-control"]
    r = common.run([control, "live-update", "-t", "10", "/nonexistent/xenstored"], CLIENT_TIMEOUT, merge=True)
    checks.check("xenstore-control live-update of a missing file is refused",
                 r.status == 3 and "File not accessible." in r.text(), f"status {r.status}: {r.text(300)}")
    common.run(env.argv(["xenstore-write", "/lu-rc/before", "kept"]), CLIENT_TIMEOUT)
    path = os.path.join(env.work, "lu-watch")
    watch = start_watch(env, ["xenstore-watch", "-n", "2", "/lu-rc"], path)
    r = common.run([control, "live-update", "-t", "10", daemon_path], CLIENT_TIMEOUT, merge=True)
    checks.check("xenstore-control live-update <xenstored> exits 0", r.status == 0, f"status {r.status}: {r.text(300)}")
    with open(log_path, "rb") as f:
        log = f.read().decode("utf-8", errors="replace")
    try:
        with open(f"/proc/{daemon.pid}/cmdline", "rb") as f:
            command_line = f.read().split(b"\0")
    except OSError:
        command_line = []
    checks.check("the daemon's process now runs with -U and restored the state",
                 daemon.poll() is None and b"-U" in command_line and "state restored from" in log,
                 f"running: {daemon.poll() is None}, command line {command_line}, log: {log[-600:]}")
    r = common.run(env.argv(["xenstore-read", "/lu-rc/before"]), CLIENT_TIMEOUT, merge=True)
    checks.check("the store is kept", r.status == 0 and r.text() == "kept\n", f"status {r.status}: {r.text(300)}")
    common.run(env.argv(["xenstore-write", "/lu-rc/after", "1"]), CLIENT_TIMEOUT)
    status, got = finish_watch(watch, path, CLIENT_TIMEOUT)
    checks.check("a watch from before the update fires after it", status == 0 and got == b"/lu-rc\n/lu-rc/after",
                 f"exit status {status}, got {show(got, 300)}")


def start_daemon(checks, env, target, log_path):
    """Builds (unless XENSTORE_SKIP_BUILD=1) and starts xenstored; returns its process once
    its socket exists."""
    if os.environ.get("XENSTORE_SKIP_BUILD") != "1":
        # xenstore-guest, the simulated guest, is the xenstore-client crate's.
        built = subprocess.run(["cargo", "build", "--release", "-p", "xenstored-linux", "-p", "xenstore-client"],
                               cwd=common.REPO)
        if built.returncode != 0:
            checks.fatal("build xenstored")
        checks.ok("build xenstored")
    os.makedirs(env.run, exist_ok=True)
    socket = os.environ["XENSTORED_PATH"] = os.path.join(env.run, "socket")
    with open(log_path, "wb") as log:
        try:
            daemon = subprocess.Popen([os.path.join(target, "release", "xenstored"), "--socket", socket,
                                       "--rundir", env.run, "-T", os.path.join(env.work, "trace"), "-N"],
                                      stdin=subprocess.DEVNULL, stderr=log)
        except OSError as e:
            checks.fatal("xenstored listens", f"cannot start it: {e}")
    for _ in range(100):
        if is_socket(socket):
            break
        time.sleep(0.1)
    if not is_socket(socket):
        with open(log_path, "rb") as f:
            detail = f.read().decode("utf-8", errors="replace")
        stop_daemon(daemon)
        checks.fatal("xenstored listens", detail)
    checks.ok(f"xenstored listens on {socket}")
    return daemon


def is_socket(path):
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def stop_daemon(daemon):
    if daemon.poll() is None:
        daemon.terminate()
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def main(argv):
    if argv:
        print(__doc__, file=sys.stdout if argv[0] in ("-h", "--help") else sys.stderr)
        return 0 if argv[0] in ("-h", "--help") else 2
    common.run_setup("real-clients")
    work = os.environ.get("XENSTORE_REAL_CLIENTS_DIR") or ""
    keep_work = bool(work)
    if keep_work:
        os.makedirs(work, exist_ok=True)
    else:
        work = tempfile.mkdtemp(prefix="xenstore-real-clients.", dir="/tmp")
    random_seconds = os.environ.get("XENSTORE_RANDOM_SECONDS") or "10"
    if not random_seconds.isdigit():
        print(f"real-clients: XENSTORE_RANDOM_SECONDS wants whole seconds, got {random_seconds!r}", file=sys.stderr)
        return 2
    random_seconds = int(random_seconds)
    target = os.path.join(common.REPO, os.environ.get("CARGO_TARGET_DIR") or "target")
    root = os.path.join(work, "debian")
    env = Env(work=work, run=os.path.join(work, "run"), root=root, programs={
        "xenstore-control": os.path.join(root, XEN_LIBEXEC, "xenstore-control"),
        "test-xenstore": os.path.join(root, XEN_LIBEXEC, "test-xenstore"),
        "xenstore-guest": os.path.join(target, "release", "xenstore-guest"),
    })
    checks = Checks()
    daemon = None
    try:
        # 1. The clients, unpacked from Debian bookworm.
        fetched = subprocess.run(["bash", os.path.join(common.REPO, "tests", "lib", "debian-packages.sh"),
                                  root, *PACKAGES])
        if fetched.returncode != 0:
            checks.fatal("fetch Debian packages")
        checks.ok("fetch Debian packages")
        libs = os.path.join(root, "usr", "lib", "x86_64-linux-gnu")
        old = os.environ.get("LD_LIBRARY_PATH")
        os.environ["LD_LIBRARY_PATH"] = libs + (f":{old}" if old else "")
        programs = [env.argv(["xenstore"])[0], env.programs["xenstore-control"], env.programs["test-xenstore"]]
        missing = [p for p in programs if not os.path.isfile(p)]
        ldd = common.run(["ldd", *programs], 60, merge=True)
        unresolved = sorted({line.strip() for line in ldd.text().splitlines() if "not found" in line})
        checks.check("client libraries resolve", not missing and not unresolved,
                     "; ".join([f"{p} missing" for p in missing] + unresolved))

        # 2. The daemon.
        daemon = start_daemon(checks, env, target, os.path.join(work, "daemon.log"))

        # 3. The checks.
        for c in CHECKS:
            run_check(checks, env, c)
        test_xenstore(checks, env, random_seconds)
        live_update(checks, env, daemon, os.path.join(target, "release", "xenstored"),
                    os.path.join(work, "daemon.log"))

        # The daemon survived everything.
        if daemon.poll() is None:
            checks.ok("xenstored still running")
        else:
            with open(os.path.join(work, "daemon.log"), "rb") as f:
                tail = b"\n".join(f.read().splitlines()[-20:]).decode("utf-8", errors="replace")
            checks.fail("xenstored still running", f"exit status {daemon.returncode}: {tail}")
    except Stop:
        pass
    finally:
        if daemon is not None:
            stop_daemon(daemon)
        if not keep_work:
            shutil.rmtree(work, ignore_errors=True)
    return checks.finish()
