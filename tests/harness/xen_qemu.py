#!/usr/bin/env python3
"""Host-side parts of the Xen-in-QEMU test harness (xen_in_qemu.py, tests/xen-in-qemu/run.sh):
the cpio writer, the vmlinux extraction and the QEMU runner with its stall watch and summary.

Part of the harness tool (tests/harness/__init__.py). xen_in_qemu.py calls these as
functions; they are also sub-commands (not meant to be run by hand, but they can be), and a
check; `harness.py X` below is, through the tool, `python3 tests/harness
cpio|vmlinux|qemu-run|qemu-check`:

  harness.py cpio OUT.cpio.gz DIR [--device PATH:c:MAJOR:MINOR ...]
      Writes DIR as a gzip-compressed "newc" cpio archive (the Linux initramfs format).
      Every entry is owned by root, so no fakeroot is needed; --device adds device nodes
      (e.g. dev/console) that an unprivileged copy of a tree cannot hold.

  harness.py vmlinux BZIMAGE OUT
      Writes the ELF vmlinux inside a bzImage compressed with xz or gzip (Debian's kernels).

  harness.py run --log LOG --timeout SECONDS [--expect "STEP..."] [--verbose] -- QEMU-COMMAND...
      Runs QEMU with the serial console on its stdout, copies the console to LOG,
      prints progress (milestones, `STEP <name>: PASS|FAIL|SKIP [detail]` lines, banner
      lines `==================== ...`, `INFO: ...` and `BENCH ...` lines of scenarios, lines Xen
      prints for guests as `(dN) ...`) with elapsed times, enforces the time limit and
      prints a summary. Exit status 0 only if no reported step failed (SKIP is not a
      failure), no expected
      step is missing and the scenario printed `SCENARIO DONE`; 1 otherwise; 3 when the
      emulated machine stalled (see --stall-seconds), so that run.sh can boot it again.

      --stall-seconds N (0: off): QEMU's vCPU threads (named `CPU K/TCG` with
      `-name ...,debug-threads=on`) are watched through /proc/PID/task/TID/schedstat. A
      thread that has not run at all for N seconds belongs to a halted vCPU that nothing
      wakes: healthy Xen wakes every pCPU about once a second (its time calibration; the
      longest sleep in healthy runs is about 2 s, printed in the summary).
      Seen under TCG with nested SVM: Xen's idle loop halted on a vCPU whose emulated GIF
      (global interrupt flag) had stayed clear, so no interrupt could ever reach it and
      the host stopped wherever it needed that CPU. With single-threaded TCG (one
      `ALL CPUs/TCG` thread) no thread is watched.

      A line of the stub's panic handler (`xenstore-stubdom: PANIC ...`, see
      STUB_PANIC_RE) fails the run as step `stub-panic`, whatever the scenario reports.

      Retries: a scenario boots a guest again only when that domain died of an
      emulation fault (a triple fault, or the GS-base oops of README.md, "Known
      limits"), and says so in one line, `RETRY <what>: <evidence>`
      (lib/dom0-lib.sh retry_guest). The summary lists every such line and their number
      (`retries: N`, also when 0). A stalled machine is booted again by run.sh only if no
      step had failed (a FAIL, or the stub's panic, is the finding: exit 1, not 3); that
      fresh boot counts as a retry too, with the stalled thread as evidence:
      --retries-file FILE holds the retries of earlier (stalled) boots, one
      `<what>\t<evidence>` line each; they are listed first, and a run that stalls
      writes them back with its own and its stall's (`stall-reboot`, naming the log as
      --stalled-log PATH, where run.sh keeps it), for the next boot.

  harness.py check
      Checks `run` itself against fake consoles (small Python programs in place of QEMU):
      a clean run passes; the stub's panic fails it even when every step passes, a later
      `STEP stub-panic: PASS` does not undo it, a panic line Xen split is joined, a panic
      printed again is counted once; a machine that stalls after a panic is not booted
      again (exit 1, not 3), nor one after a failed step; RETRY lines are listed and
      counted (`retries: N`), a stall is written to --retries-file as a retry and the next
      boot lists it. Needs nothing but Python; takes about 15 s.
"""

import argparse
import gzip
import os
import re
import selectors
import signal
import stat
import subprocess
import sys
import time

# ---------------------------------------------------------------------------------------
# cpio (newc) writer


def _cpio_header(ino, mode, nlink, mtime, size, rdev_major, rdev_minor, name):
    fields = [
        ino, mode, 0, 0, nlink, mtime, size,  # ino mode uid gid nlink mtime filesize
        0, 0, rdev_major, rdev_minor,  # devmajor devminor rdevmajor rdevminor
        len(name) + 1, 0,  # namesize check
    ]
    header = b"070701" + b"".join(b"%08X" % f for f in fields) + name + b"\0"
    return header + b"\0" * ((4 - len(header) % 4) % 4)


def _pad(n):
    return b"\0" * ((4 - n % 4) % 4)


def write_cpio(out_path, root, devices):
    entries = []  # (archive name, full path or None, device spec or None)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        if rel != ".":
            entries.append((rel, dirpath, None))
        for name in sorted(filenames) + sorted(d for d in dirnames if os.path.islink(os.path.join(dirpath, d))):
            full = os.path.join(dirpath, name)
            entries.append((os.path.normpath(os.path.join(rel, name)), full, None))
        # os.walk does not descend into symlinked dirs by default; they were added above.
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
    for spec in devices:
        path, kind, major, minor = spec.split(":")
        if kind not in ("c", "b"):
            raise SystemExit(f"harness.py cpio: bad device spec {spec!r} (want PATH:c|b:MAJOR:MINOR)")
        entries.append((path.strip("/"), None, (kind, int(major), int(minor))))

    tmp = out_path + ".tmp"
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as out:
        ino = 1
        for name, full, dev in entries:
            bname = name.encode()
            if dev is not None:
                kind, major, minor = dev
                mode = (stat.S_IFCHR if kind == "c" else stat.S_IFBLK) | 0o600
                out.write(_cpio_header(ino, mode, 1, 0, 0, major, minor, bname))
            else:
                st = os.lstat(full)
                if stat.S_ISLNK(st.st_mode):
                    data = os.readlink(full).encode()
                    out.write(_cpio_header(ino, st.st_mode, 1, 0, len(data), 0, 0, bname))
                    out.write(data + _pad(len(data)))
                elif stat.S_ISDIR(st.st_mode):
                    out.write(_cpio_header(ino, st.st_mode, 2, 0, 0, 0, 0, bname))
                elif stat.S_ISREG(st.st_mode):
                    size = st.st_size
                    out.write(_cpio_header(ino, st.st_mode, 1, 0, size, 0, 0, bname))
                    with open(full, "rb") as f:
                        while True:
                            chunk = f.read(1 << 20)
                            if not chunk:
                                break
                            out.write(chunk)
                    out.write(_pad(size))
                else:
                    raise SystemExit(f"harness.py cpio: unsupported file type: {full}")
            ino += 1
        out.write(_cpio_header(ino, 0, 1, 0, 0, 0, 0, b"TRAILER!!!"))
    os.replace(tmp, out_path)


# ---------------------------------------------------------------------------------------
# QEMU runner

# Not preceded by a word character or '-': a guest's `GUEST-STEP ...` lines (re-emitted by
# the scenario as STEP lines of its own) must not count when a scenario prints a guest log.
STEP_RE = re.compile(r"(?<![A-Za-z0-9_-])STEP ([A-Za-z0-9_.:/-]+): (PASS|FAIL|SKIP)\b ?(.*)$")
GUEST_RE = re.compile(r"\((d[0-9]+)\) (.*)$")
# A scenario's retry (lib/dom0-lib.sh retry_guest): `RETRY <what>: <evidence>`, e.g.
# `RETRY xl-create: domain 3 died of a triple fault: (XEN) d3v0 Triple fault ...`.
RETRY_RE = re.compile(r"(?<![A-Za-z0-9_-])RETRY ([A-Za-z0-9_.:/-]+): (.*)$")
# Milestones: (regex, description). Each is reported once, the first time it matches.
MILESTONES = [
    (re.compile(r"Xen version \d+\.\d+"), "Xen started"),
    (re.compile(r"HVM: Hardware Assisted Paging \(HAP\) detected"), "Xen: HAP detected"),
    (re.compile(r"\*\*\* LOADING DOMAIN 0 \*\*\*"), "Xen: building dom0"),
    (re.compile(r"Freed \d+kB init memory"), "Xen: dom0 started"),
    (re.compile(r"HARNESS: dom0 init started"), "dom0: /init started"),
    (re.compile(r"HARNESS: dom0 set-up done"), "dom0: common set-up done"),
    (re.compile(r"HARNESS: scenario started"), "dom0: scenario started"),
    (re.compile(r"SCENARIO DONE"), "dom0: scenario done"),
    (re.compile(r"Entering ACPI S5 state|Hardware Dom0 (halted|shutdown)"), "Xen: powering off"),
]
# Anchored: a guest's console log printed by a scenario (indented, `    | ...`) may hold a
# panic of that guest, which must not stop the host.
FATAL = [
    re.compile(r"^(\(XEN\) )?Panic on CPU \d+"),
    re.compile(r"^(\[ *[0-9.]+\] )?Kernel panic - not syncing"),
]
# The stub's panic handler (src/runtime/panic.rs) prints `xenstore-stubdom: PANIC at
# FILE:LINE: MESSAGE` (or `PANIC: MESSAGE`, or `panic while panicking`) on port 0xE9, which
# Xen's console shows as `(dN) xenstore-stubdom: PANIC ...`. A panicking stub takes the
# host's xenstore with it (issue 15), while the scenario may still limp to its end with
# clients that time out, or get a lucky retry: so such a line fails every scenario, as the
# step STUB_PANIC_STEP, whatever else the scenario reports. Not anchored: a scenario that
# prints the line again (`xl dmesg`, the stub's PV console log) shows the same panic.
STUB_PANIC_RE = re.compile(r"xenstore-stubdom: (PANIC\b|panic while panicking)")
STUB_PANIC_STEP = "stub-panic"
STUB_LINE_PREFIX = "xenstore-stubdom: "
# Xen hands port 0xE9 output on in chunks of at most 199 characters (DOMAIN_PBUF_SIZE), so a
# long panic message continues on the domain's next `(dN)` lines, the ones that do not start
# a new stub line; this many of them are joined to the evidence.
STUB_PANIC_CONTINUATIONS = 3
# After SCENARIO DONE, how long QEMU may take to power off before it is killed.
POWEROFF_GRACE = 60
# Exit status of `run` when the emulated machine stalled (run.sh boots it once more).
EXIT_STALLED = 3
VCPU_THREAD_RE = re.compile(r"^CPU (\d+)/TCG$")


class VcpuWatch:
    """When each of QEMU's vCPU threads last ran, from /proc/PID/task/TID/schedstat (time
    on CPU and number of times scheduled: unchanged means the thread slept throughout)."""

    def __init__(self, pid):
        self.pid = pid
        self.threads = {}  # tid -> [vcpu index, last schedstat, when it last changed]
        self.longest_sleep = {}  # vcpu index -> seconds

    def poll(self, now):
        try:
            tids = os.listdir(f"/proc/{self.pid}/task")
        except OSError:
            return
        for tid in tids:
            entry = self.threads.get(tid)
            if entry is None:
                try:
                    with open(f"/proc/{self.pid}/task/{tid}/comm") as f:
                        m = VCPU_THREAD_RE.match(f.read().strip())
                except OSError:
                    continue
                if not m:
                    self.threads[tid] = None
                    continue
                entry = self.threads[tid] = [int(m.group(1)), None, now]
            if entry is None:
                continue
            try:
                with open(f"/proc/{self.pid}/task/{tid}/schedstat") as f:
                    stat_now = f.read().split()[:2]
            except OSError:
                continue
            if stat_now != entry[1]:
                self._note_sleep(entry[0], now - entry[2])
                entry[1], entry[2] = stat_now, now

    def _note_sleep(self, vcpu, seconds):
        self.longest_sleep[vcpu] = max(self.longest_sleep.get(vcpu, 0.0), seconds)

    def stalled(self, now, limit):
        """(vcpu, seconds asleep) of a vCPU asleep for `limit` seconds or more, else None."""
        for entry in self.threads.values():
            if entry is not None and entry[1] is not None and now - entry[2] >= limit:
                return entry[0], now - entry[2]
        return None

    def summary(self):
        """The longest sleep seen of each vCPU thread, measured between polls (1 s apart)."""
        return ", ".join(f"CPU {vcpu} {secs:.1f}s" for vcpu, secs in sorted(self.longest_sleep.items()))


def run_qemu(args):
    expected = args.expect.split() if args.expect else []
    start = time.monotonic()
    deadline = start + args.timeout
    steps = {}  # name -> (result, detail, elapsed); a step reported twice keeps the worst
    order = []
    guest_lines = []
    seen_milestones = set()
    done_at = None
    fatal = None
    fatal_at = None
    timed_out = False
    stalled = None  # (vcpu, seconds) when the watchdog stopped the machine
    # Retries: [what, evidence, elapsed or None, which boot] (earlier boots' from the file).
    retries = []
    if args.retries_file and os.path.exists(args.retries_file):
        with open(args.retries_file, encoding="utf-8", errors="replace") as f:
            for entry in f:
                what, _, evidence = entry.rstrip("\n").partition("\t")
                if what:
                    retries.append([what, evidence, None, "an earlier boot"])
    # The stub's panics ([text from the stub's prefix on, evidence, elapsed]), kept apart
    # from `steps` so that nothing the scenario prints later (a step of the same name, a
    # retry that passes) can undo them.
    stub_panics = []
    # (domain, index in stub_panics, continuations joined) while a panic line may go on.
    panic_continuing = None

    def say(msg):
        print(f"[{time.monotonic() - start:7.1f}s] {msg}", flush=True)

    log = open(args.log, "w", encoding="utf-8", errors="replace")
    say("starting: " + " ".join(args.qemu))
    proc = subprocess.Popen(args.qemu, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    vcpus = VcpuWatch(proc.pid)
    next_watch = start
    buf = b""
    tail = []

    def note_stub_panic(line, guest):
        """Records the stub's panic lines; joins the chunks Xen split a long one into."""
        nonlocal panic_continuing
        if guest is not None and panic_continuing is not None and panic_continuing[0] == guest.group(1):
            domain, index, joined = panic_continuing
            text = guest.group(2)
            if joined < STUB_PANIC_CONTINUATIONS and not text.startswith(STUB_LINE_PREFIX):
                stub_panics[index][1] += text
                panic_continuing = (domain, index, joined + 1)
                return
            panic_continuing = None
        m = STUB_PANIC_RE.search(line)
        if not m:
            return
        key = line[m.start():].strip()
        # The same panic printed again (`xl dmesg`, whole or in Xen's chunks, or the stub's
        # PV console log) is not a new one.
        if any(key.startswith(seen[0]) or seen[0].startswith(key) for seen in stub_panics):
            return
        evidence = line.strip()
        stub_panics.append([key, evidence, time.monotonic() - start])
        if guest is not None:
            panic_continuing = (guest.group(1), len(stub_panics) - 1, 0)
        say(f"STEP {STUB_PANIC_STEP}: FAIL {evidence}")

    def handle_line(raw):
        nonlocal done_at, fatal
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n").replace("\r", "")
        log.write(line + "\n")
        tail.append(line)
        del tail[:-80]
        if args.verbose:
            print(line, flush=True)
        for regex, desc in MILESTONES:
            if desc not in seen_milestones and regex.search(line):
                seen_milestones.add(desc)
                if not args.verbose:
                    say(desc)
                if desc == "dom0: scenario done" and done_at is None:
                    done_at = time.monotonic()
        m = STEP_RE.search(line)
        if m:
            name, result, detail = m.group(1), m.group(2), m.group(3).strip()
            if name not in steps:
                order.append(name)
            if name not in steps or result == "FAIL":
                steps[name] = (result, detail, time.monotonic() - start)
            if not args.verbose:
                say(f"STEP {name}: {result}" + (f" {detail}" if detail else ""))
        r = RETRY_RE.search(line)
        if r and not m:
            retries.append([r.group(1), r.group(2).strip(), time.monotonic() - start, "this boot"])
            if not args.verbose:
                say(f"RETRY {r.group(1)}: {r.group(2).strip()}")
        if not args.verbose and line.startswith(("==================== ", "INFO: ", "BENCH ")):
            say(line)
        g = GUEST_RE.search(line)
        if g and not m:
            guest_lines.append(line[g.start():])
            if not args.verbose:
                say(f"Xen console: {line[g.start():]}")
        note_stub_panic(line, g if g and not m else None)
        for regex in FATAL:
            if fatal is None and regex.search(line):
                fatal = line.strip()
                say(f"fatal: {fatal}")

    while True:
        now = time.monotonic()
        if now >= deadline:
            timed_out = True
            break
        if done_at is not None and now >= done_at + POWEROFF_GRACE:
            say(f"QEMU still running {POWEROFF_GRACE}s after SCENARIO DONE; stopping it")
            break
        if fatal is not None:
            # Let a few more lines (the panic message) arrive, then stop.
            if fatal_at is None:
                fatal_at = now
            elif now - fatal_at > 5:
                break
        if now >= next_watch:
            next_watch = now + 1.0
            vcpus.poll(now)
            if args.stall_seconds > 0 and done_at is None:
                stalled = vcpus.stalled(now, args.stall_seconds)
                if stalled is not None:
                    say(f"stalled: QEMU's vCPU {stalled[0]} has not run for {stalled[1]:.0f}s (a halted "
                        "vCPU that nothing wakes; see harness.py --help); stopping QEMU")
                    break
        events = sel.select(timeout=min(1.0, max(0.05, deadline - now)))
        if events:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                handle_line(raw)
    if buf:
        handle_line(buf)

    if proc.poll() is None and not timed_out and stalled is None:
        # The console closed (QEMU is exiting) or the harness gave up: give QEMU a moment.
        try:
            proc.wait(timeout=10 if fatal is None else 1)
        except subprocess.TimeoutExpired:
            pass
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        qemu_status = "stopped by the harness"
    else:
        proc.wait()
        qemu_status = f"exited with status {proc.returncode}"
    log.close()
    elapsed = time.monotonic() - start

    # Summary.
    print("", flush=True)
    print("=" * 72)
    print(f"Summary ({args.name}): wall time {elapsed:.1f}s, QEMU {qemu_status}")
    print(f"Longest sleep of each vCPU thread: {vcpus.summary() or 'not seen'}")
    if guest_lines:
        print(f"Lines Xen printed for guests ({len(guest_lines)}):")
        for line in guest_lines[:60]:
            print(f"    {line}")
        if len(guest_lines) > 60:
            print(f"    ... {len(guest_lines) - 60} more in the log")
    ok = True
    failed_before = [name for name in order if steps[name][0] == "FAIL"]
    for name in order:
        result, detail, at = steps[name]
        ok &= result != "FAIL"
        print(f"  {result}  {name:<24} {at:7.1f}s  {detail}")
    for _, evidence, at in stub_panics:
        ok = False
        print(f"  FAIL  {STUB_PANIC_STEP:<24} {at:7.1f}s  {evidence}")
    missing = [s for s in expected if s not in steps]
    for name in missing:
        print(f"  MISSING {name}")
    # Every retry, with its evidence: a guest booted again after Xen logged its triple
    # fault, an earlier boot of the whole machine that stalled.
    for what, evidence, at, boot in retries:
        when = f"{at:7.1f}s" if at is not None else "earlier"
        print(f"  RETRY {what:<24} {when}  {evidence}" + ("" if at is not None else f" ({boot})"))
    print(f"retries: {len(retries)}")
    ok &= not missing
    if not steps:
        print("  (no STEP lines)")
        ok = False
    if done_at is None:
        ok = False
        if stalled is not None:
            reason = f"the emulated machine stalled (vCPU {stalled[0]} asleep for {stalled[1]:.0f}s)"
        elif timed_out:
            reason = "time limit reached"
        else:
            reason = fatal or "console closed"
        print(f"  scenario did not finish: {reason} (SCENARIO DONE missing)")
        if stalled is not None and (stub_panics or failed_before):
            print(f"  not booted again: the machine stalled after "
                  f"{'the stub' + chr(39) + 's panic' if stub_panics else 'failed steps: ' + ' '.join(failed_before)}"
                  " (a fresh boot would hide them)")
    elif timed_out:
        print("  note: time limit reached while powering off (the scenario had finished)")
    if fatal:
        ok = False
        print(f"  fatal console line: {fatal}")
    print(f"Result: {'PASS' if ok else 'FAIL'}   (serial log: {args.log})")
    if not ok and not args.verbose:
        print("-" * 72)
        print("Last console lines:")
        for line in tail[-40:]:
            print(f"    {line}")
    print("=" * 72, flush=True)
    # A stall after a panic or a failed step is not booted again: that is the finding, and
    # a fresh boot that passed would hide it.
    if stalled is not None and not stub_panics and not failed_before:
        if args.retries_file:
            kept = args.stalled_log or args.log
            stall = (f"the emulated machine stalled: QEMU's thread `CPU {stalled[0]}/TCG` did not run for "
                     f"{stalled[1]:.0f}s (at {elapsed:.0f}s of the boot; limit {args.stall_seconds:.0f}s; "
                     f"its serial log: {kept}); booted again from scratch")
            with open(args.retries_file, "w", encoding="utf-8") as f:
                for what, evidence, _, _ in retries:
                    f.write(f"{what}\t{evidence}\n")
                f.write(f"stall-reboot\t{stall}\n")
        return EXIT_STALLED
    return 0 if ok else 1


def extract_vmlinux(bzimage, out):
    import lzma
    import zlib
    data = open(bzimage, "rb").read()
    for magic, inflate in ((b"\xfd7zXZ\x00", lambda b: lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(b)),
                           (b"\x1f\x8b\x08", lambda b: zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(b))):
        at = data.find(magic)
        while at >= 0:
            try:
                elf = inflate(data[at:])
            except (lzma.LZMAError, zlib.error):
                elf = b""
            if elf[:4] == b"\x7fELF":
                with open(out, "wb") as f:
                    f.write(elf)
                return 0
            at = data.find(magic, at + 1)
    raise SystemExit(f"harness.py vmlinux: no xz or gzip ELF payload in {bzimage}")


# ---------------------------------------------------------------------------------------
# Self-check of `run` with fake consoles

# A fake QEMU: prints LINES (with a short pause, as a console would), then optionally names
# its thread like a vCPU of QEMU and sleeps without running, which the stall watch must see.
FAKE_CONSOLE = """
import sys, time
for line in LINES:
    print(line, flush=True)
    time.sleep(0.02)
if STALL:
    with open("/proc/self/comm", "w") as comm:
        comm.write("CPU 0/TCG")
    time.sleep(30)
"""
PANIC_LINE = ("(d1) xenstore-stubdom: PANIC at src/runtime/heap.rs:160: "
              "memory allocation of 4608 bytes failed")
PASSING_RUN = ["(XEN) Xen version 4.17.5", "STEP dom0-setup: PASS modules loaded",
               "STEP xenstore: PASS stub", "SCENARIO DONE"]
RETRY_LINE = ("RETRY xl-create: domain 3 died of a triple fault: "
              "(XEN) d3v0 Triple fault - invoking HVM shutdown action 1")


def check_run():
    """Runs `run` on fake consoles; returns 0 if every case behaved as described in --help."""
    import tempfile
    # (name, console lines, stall, expected exit status, texts the summary must hold,
    #  texts it must not hold)
    # Longer than Xen's 199-character chunks: the console shows it on two `(d1)` lines.
    long_message = "x" * 250 + " END"
    split_head = "(d1) xenstore-stubdom: PANIC at src/engine.rs:1: " + long_message
    cut = len("(d1) ") + 199
    cases = [
        ("clean run passes", PASSING_RUN, False, 0, ["Result: PASS", "retries: 0"], ["stub-panic", "RETRY"]),
        ("RETRY lines are listed with their evidence and counted",
         PASSING_RUN[:2] + [RETRY_LINE, "    | RETRYx no: not one", "STEP xl-create: PASS domain 4"] + PASSING_RUN[2:],
         False, 0, ["RETRY xl-create", "d3v0 Triple fault", "retries: 1", "Result: PASS"], ["retries: 0"]),
        ("a panic fails a run whose steps all pass",
         PASSING_RUN[:2] + [PANIC_LINE, "(d1) xenstore-stubdom: recent trace (oldest first):"]
         + PASSING_RUN[2:],
         False, 1, ["FAIL  stub-panic", "memory allocation of 4608 bytes failed", "Result: FAIL"], []),
        ("a later STEP stub-panic: PASS does not undo it",
         PASSING_RUN[:2] + [PANIC_LINE, "STEP stub-panic: PASS nothing to see"] + PASSING_RUN[2:],
         False, 1, ["FAIL  stub-panic", "Result: FAIL"], []),
        ("a panic line split by Xen is joined, printed again counted once",
         PASSING_RUN[:2] + [split_head[:cut], "(d1) " + split_head[cut:],
                            "(d1) xenstore-stubdom: recent trace (oldest first):",
                            "    | " + split_head[:cut], "    | " + split_head[5:]]
         + PASSING_RUN[2:],
         False, 1, [long_message, "Result: FAIL"], []),
        ("the panic handler's second panic counts too",
         PASSING_RUN[:2] + ["(d3) xenstore-stubdom: panic while panicking"] + PASSING_RUN[2:],
         False, 1, ["FAIL  stub-panic", "panic while panicking"], []),
        ("a stall after a panic is final (exit 1, not 3)",
         PASSING_RUN[:2] + [PANIC_LINE], True, 1, ["stalled", "FAIL  stub-panic"], []),
        ("a stall without a panic asks for a new boot (exit 3)",
         PASSING_RUN[:2], True, EXIT_STALLED, ["stalled", "retries: 0"], ["stub-panic"]),
        ("a stall after a failed step is final (exit 1, not 3)",
         PASSING_RUN[:2] + ["STEP guest-boot: FAIL domain 3 died, no triple fault"], True, 1,
         ["stalled", "FAIL  guest-boot", "not booted again"], []),
    ]
    # A run that stalls after a retry, then the fresh boot run.sh makes (same retries file):
    # the stall and the earlier retry are the new boot's retries.
    cases.append(("a stall is written to the retries file (exit 3)",
                  PASSING_RUN[:2] + [RETRY_LINE], True, EXIT_STALLED, ["retries: 1"], []))
    cases.append(("the next boot lists the stall and the earlier retries",
                  PASSING_RUN, False, 0,
                  ["RETRY stall-reboot", "CPU 0/TCG", "did not run for", "RETRY xl-create", "retries: 2",
                   "Result: PASS"], []))
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        retries_file = os.path.join(tmp, "retries")
        for name, lines, stall, want_status, must, must_not in cases:
            program = f"LINES = {lines!r}\nSTALL = {stall!r}\n" + FAKE_CONSOLE
            result = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "run", "--name", "check",
                 "--log", os.path.join(tmp, "console.log"), "--timeout", "20",
                 "--stall-seconds", "2" if stall else "0", "--retries-file", retries_file, "--",
                 sys.executable, "-c", program],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            # Only the stalled case of the last pair leaves its retries for the next one.
            if not name.startswith("a stall is written") and os.path.exists(retries_file):
                os.unlink(retries_file)
            out = result.stdout
            # The summary up to its copy of the last console lines, which hold anything.
            summary = out[out.find("Summary ("):].split("Last console lines:")[0]
            problems = []
            if result.returncode != want_status:
                problems.append(f"exit status {result.returncode}, expected {want_status}")
            problems += [f"summary lacks {text!r}" for text in must if text not in summary]
            problems += [f"summary holds {text!r}" for text in must_not if text in summary]
            if summary.count(f"FAIL  {STUB_PANIC_STEP}") > 1:
                problems.append("the same panic is listed more than once")
            if problems:
                failures += 1
                print(f"FAIL  {name}: {'; '.join(problems)}")
                print("\n".join("    | " + line for line in out.splitlines()))
            else:
                print(f"ok    {name}")
    print(f"harness.py check: {len(cases) - failures} of {len(cases)} cases behaved")
    return 1 if failures else 0


# The retry evidence of lib/dom0-lib.sh (emulation_fault_line, retry_guest), run by the
# host's sh against a fake `xl` and console logs: what allows a retry must be exactly the
# emulation faults of README.md, "Known limits", and nothing else.
FAKE_XL = """#!/bin/sh
case $1 in
list) printf 'Name ID Mem VCPUs State Time(s)\\nDomain-0 0 512 2 r----- 9.0\\n'
      [ -z "$FAKE_DOMAIN" ] || printf '%s\\n' "$FAKE_DOMAIN" ;;
dmesg) printf '%s\\n' "$FAKE_DMESG" ;;
esac
"""
XEN_IN_QEMU = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "xen-in-qemu")
GS_FIXTURE = os.path.join(XEN_IN_QEMU, "fixtures", "linux-gs-base-fault.console")


def check_retry_evidence():
    """Runs emulation_fault_line and retry_guest of lib/dom0-lib.sh on fake domains; returns
    the number of cases that did not behave."""
    import tempfile
    with open(GS_FIXTURE) as f:
        gs_oops = f.read()
    # The same oops, but the handled fault's address is not the %gs: displacement: a plain
    # kernel fault, which is no proof of anything.
    other_address = gs_oops.replace("RAX: 000000000001fb80", "RAX: 00007f00a1281740")
    init_killed = ("[    9.1] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100\n"
                   "[    9.2] Kernel Offset: disabled\n")
    crashed = "xsguest2 3 128 1 ---sc- 12.3"
    running = "xsguest2 3 128 1 -b---- 12.3"
    triple = "(XEN) d3v0 Triple fault - invoking HVM shutdown action 1"
    # (name, xl list line of domain 3, xl dmesg, its console, status, text the line must hold)
    cases = [
        ("a triple fault in xl dmesg allows a retry", crashed, triple, init_killed, 0, "d3v0 Triple fault"),
        ("another domain's triple fault does not", crashed, triple.replace("d3v0", "d13v0"), init_killed, 1, ""),
        ("a crash with the GS-base oops allows a retry", crashed, "", gs_oops, 0,
         "page fault at 0x1fb80, the displacement of its own %gs:0x1fb80 load"),
        ("a kernel fault at another address does not", crashed, "", other_address, 1, ""),
        ("a panic of another kind does not", crashed, "", init_killed, 1, ""),
        ("a running domain is no retry, whatever its console", running, "", gs_oops, 1, ""),
        ("a domain gone from xl list (no name, no console) is none", "", "", gs_oops, 1, ""),
    ]
    failures = 0
    lib = os.path.join(XEN_IN_QEMU, "lib", "dom0-lib.sh")
    with tempfile.TemporaryDirectory() as tmp:
        xl = os.path.join(tmp, "xl")
        with open(xl, "w") as f:
            f.write(FAKE_XL)
        os.chmod(xl, 0o755)
        for name, domain, dmesg, console, want_status, want_text in cases:
            with open(os.path.join(tmp, "guest-xsguest2.log"), "w") as f:
                f.write(console)
            env = dict(os.environ, XL_PROGRAM=xl, CONSOLE_LOG_DIR=tmp, FAKE_DOMAIN=domain, FAKE_DMESG=dmesg)
            result = subprocess.run(
                ["sh", "-c", f'. "{lib}"; retry_guest guest2 3'],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            out = result.stdout.strip()
            problems = []
            if result.returncode != want_status:
                problems.append(f"status {result.returncode}, expected {want_status}")
            if want_status == 0 and not (out.startswith("RETRY guest2: domain 3 ") and want_text in out):
                problems.append(f"printed {out!r}, expected a RETRY line holding {want_text!r}")
            if want_status != 0 and out:
                problems.append(f"printed {out!r}, expected nothing")
            if problems:
                failures += 1
                print(f"FAIL  {name}: {'; '.join(problems)}")
            else:
                print(f"ok    {name}")
    print(f"retry evidence: {len(cases) - failures} of {len(cases)} cases behaved")
    return failures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("cpio")
    p.add_argument("out")
    p.add_argument("root")
    p.add_argument("--device", action="append", default=[])
    p = sub.add_parser("vmlinux")
    p.add_argument("bzimage")
    p.add_argument("out")
    p = sub.add_parser("run")
    p.add_argument("--log", required=True)
    p.add_argument("--timeout", type=float, required=True)
    p.add_argument("--expect", default="")
    p.add_argument("--name", default="scenario")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--stall-seconds", type=float, default=0)
    p.add_argument("--retries-file", default="")
    p.add_argument("--stalled-log", default="")
    p.add_argument("qemu", nargs="+")
    sub.add_parser("check")
    args = parser.parse_args(argv)
    if args.cmd == "check":
        run_status = check_run()
        return 1 if check_retry_evidence() or run_status else 0
    if args.cmd == "vmlinux":
        return extract_vmlinux(args.bzimage, args.out)
    if args.cmd == "cpio":
        write_cpio(args.out, args.root, args.device)
        return 0
    return run_qemu(args)


if __name__ == "__main__":
    sys.exit(main())
