"""The benchmark on real Xen: Xen (Debian's 4.17 unless --xen) + Linux dom0 in QEMU (TCG), the same workload
(tests/xen-in-qemu/scenarios/bench.sh) once with Debian's C xenstored in dom0 and once with
this stub domain as the host's xenstore; prints both figures of every measurement and the
ratio stub/C (lower = the stub is faster), and writes target/bench/xen-results.csv.
Under TCG absolute times mean little: compare the ratios.

Usage: bench/xen-in-qemu.sh [options]     (= python3 tests/harness bench-xen [options])
  --repeat R         run each side R times, alternating the order (C first in odd rounds),
                     and compare the medians (default 1)
  --set NAME=VALUE   a scenario variable for both runs (repeatable): TX_ITER (100),
                     RANDOM_SECONDS (10), GUESTS (3), MULTI_GUESTS (4), GUEST_MEMORY (128)...
  --kernel IMAGE     the stub image (default: the product image built with
                     tests/lib/kernel-image.sh product, as tests/xen-in-qemu/run.sh does,
                     honouring CARGO_TARGET_DIR, and copied once so every round runs the
                     same image)
  --timeout SECONDS  time limit of each QEMU run (default: the scenario's, 1500)
  --xen VERSION      the Xen booted for both sides: 4.17 (default), 4.20 or 4.22, as
                     tests/xen-in-qemu/run.sh --xen (C xenstored is that version's)
  --one-cpu          pin dom0's vCPUs and the stub domain's to CPU 0 (xl vcpu-pin) before
                     measuring, in both runs: a wake-up of the other side is then a
                     context switch, not a cross-CPU interrupt (guests still use both CPUs)

What is measured (details in the scenario's header), all in dom0:
  tx.NAME       Xen's test-xenstore, each test once (-t NAME), TX_RUNS (7) times: the
                median ns, through the client's default path (C: its Unix socket; stub:
                dom0's ring, there is no socket)
  txring.NAME   the same through dom0's kernel ring for both (XENSTORED_PATH=/dev/xen/xenbus)
  tx.all-wall, txring.all-wall   wall time of one whole `test-xenstore -i TX_ITER` (50)
  txloop.NAME, txringloop.NAME   each test's average ns in that run
  guest.*       GUESTS PVH Linux guests one at a time: `xl create` until it returns
                (create), from `xl create` until the guest wrote data/booted through its
                ring (boot), `xl destroy` (destroy); and their medians (*-med)
  multi.*       MULTI_GUESTS guests started one after another and kept running (create-K
                and boot-K with K-1 running), then destroyed one by one; totals
  idle0.*, idle.*   CPU used (ms per s) during IDLE_SECONDS of nothing, without guests and
                with MULTI_GUESTS guests: by the xenstore (the stub domain / xenstored),
                per guest, by dom0
  cpu.*         CPU time of the xenstore during each part (tx, guests, multi)
Output: the table on stdout and in target/bench/xen-results.txt; target/bench/xen-results.csv
(measurement,unit,c,stub,ratio_stub_c; medians when --repeat > 1);
target/bench/xen-results-runs.csv (every figure of every run); the serial logs
target/bench/xen-in-qemu-bench-{c,stub}-ROUND.log.
Exit status: 0 when every run passed; 1 when one failed (the message names it: C or stub,
round, failed steps; the table still shows what was measured); 2 on usage errors.
A full run (one round, defaults) takes about 6 minutes on 2 idle cores (QEMU alone on
them), 25-35 minutes when other jobs keep the host busy; --repeat R multiplies that by R.
A short run for trying it out: --set TX_RUNS=1 --set TX_ITER=5 --set RANDOM_SECONDS=2
--set GUESTS=1 --set MULTI_GUESTS=1 --set IDLE_SECONDS=2.
"""

import hashlib
import math
import os
import re
import shutil
import subprocess
import sys
import time

from harness import common

WHO = "xen-in-qemu.sh"  # the name users call it by (bench/xen-in-qemu.sh)
OUT = os.path.join(common.REPO, "target", "bench")
RUN_SH = os.path.join(common.REPO, "tests", "xen-in-qemu", "run.sh")
SIDES = {"c": "C xenstored", "stub": "stub"}
# --one-cpu: run by the scenario (its PLACE variable) before it measures.
ONE_CPU = "PLACE=xl vcpu-pin 0 all 0; if xl domid Xenstore >/dev/null 2>&1; then xl vcpu-pin Xenstore all 0; fi"
# A figure the scenario prints: `BENCH <name> <value> <unit>`, not preceded by a name
# character (a guest's console lines, printed indented, hold other words).
BENCH_RE = re.compile(r"(?:^|[^A-Za-z0-9_-])BENCH ([A-Za-z0-9_.-]+) ([0-9]+(?:\.[0-9]+)?) ([A-Za-z%/]+)[ \t]*$")
FAILED_STEP_RE = re.compile(r"STEP ([A-Za-z0-9_.:/-]*): FAIL")


def say(msg=""):
    print(f"{WHO}: {msg}" if msg else "", file=sys.stderr, flush=True)


def usage_error(msg=None):
    if msg:
        say(msg)
    print(__doc__, file=sys.stderr)
    sys.exit(2)


def parse(argv):
    """The options, as the shell version took them: `--opt VALUE` or `--opt=VALUE`."""
    opts = {"repeat": "1", "kernel": "", "timeout": "", "xen": "4.17", "sets": []}
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if name in ("--repeat", "--set", "--kernel", "--timeout", "--xen"):
            if not eq:
                if i + 1 >= len(argv):
                    usage_error()
                value = argv[i + 1]
                i += 1
            if name == "--set":
                opts["sets"].append(value)
            else:
                opts[name[2:]] = value
        elif arg == "--one-cpu":
            opts["sets"].append(ONE_CPU)
        elif arg in ("-h", "--help"):
            usage_error()
        else:
            usage_error(f"unknown argument '{arg}'")
        i += 1
    if not re.fullmatch(r"[1-9][0-9]*", opts["repeat"]):
        say(f"--repeat wants a positive number, got '{opts['repeat']}'")
        sys.exit(2)
    if opts["timeout"] and not re.fullmatch(r"[0-9]+", opts["timeout"]):
        say(f"--timeout wants whole seconds, got '{opts['timeout']}'")
        sys.exit(2)
    if opts["xen"] not in ("4.17", "4.20", "4.22"):
        say(f"--xen wants 4.17, 4.20 or 4.22, got '{opts['xen']}'")
        sys.exit(2)
    opts["repeat"] = int(opts["repeat"])
    return opts


def die(msg):
    say(f"error: {msg}")
    sys.exit(1)


def stub_image(kernel):
    """The stub image every round runs: --kernel's, or the cargo build copied once, so that
    a tree that changes meanwhile does not change the image between rounds."""
    if kernel:
        if not os.path.isfile(kernel):
            die(f"--kernel {kernel}: no such file")
        stub = kernel
    else:
        if shutil.which("cargo") is None:
            die("cargo not found: build the stub or pass --kernel IMAGE")
        say("building the stub (tests/lib/kernel-image.sh product)")
        built = common.kernel_image("product")
        if built is None:
            die("the stub run cannot start: the stub image does not build (fix it or pass --kernel IMAGE); "
                "nothing was run")
        stub = os.path.join(OUT, "xen-bench-xenstore-stubdom")
        shutil.copyfile(built, stub)
    with open(stub, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    say(f"stub image {stub} ({os.path.getsize(stub)} bytes, sha256 {digest[:16]})")
    return stub


def extract(log):
    """The BENCH figures of a serial log: [(name, value, unit)] in the order of their first
    appearance; the last copy of each wins (the scenario repeats them, indented, at the end)."""
    figures = {}
    with open(log, encoding="utf-8", errors="replace", newline="\n") as f:
        for line in f:
            m = BENCH_RE.search(line.rstrip("\n"))
            if m:
                figures[m.group(1)] = (m.group(2), m.group(3))  # a dict keeps the first insertion's place
    return [(name, value, unit) for name, (value, unit) in figures.items()]


def why_failed(status, figures, log):
    why = f"run.sh exit status {status}"
    if not figures:
        why += ", no BENCH lines"
    if os.path.isfile(log):
        with open(log, encoding="utf-8", errors="replace") as f:
            text = f.read()
        bad = sorted(set(FAILED_STEP_RE.findall(text)))
        if bad:
            why += f", failed steps: {' '.join(bad)}"
        if "SCENARIO DONE" not in text:
            why += ", the scenario did not finish"
    return why


def load_average():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def median_text(values):
    """The median of figures, as the table shows it: whole numbers stay whole, figures of
    1000 and more are rounded to whole numbers, others keep at most two decimals."""
    x = sorted(float(v) for v in values)
    m = len(x)
    med = x[(m - 1) // 2] if m % 2 else (x[m // 2 - 1] + x[m // 2]) / 2
    if med == int(med) or med >= 1000:
        return "%.0f" % med
    short = float("%.2f" % med)
    return "%d" % short if short == int(short) else "%.6g" % short


def medians(runs):
    """runs: [[(name, value, unit)], ...] of one side -> {name: (median, unit)} in the order
    of first appearance."""
    values, units = {}, {}
    for figures in runs:
        for name, value, unit in figures:
            values.setdefault(name, []).append(value)
            units[name] = unit
    return {name: (median_text(v), units[name]) for name, v in values.items()}


def comparison(c, stub):
    """Rows (name, unit, c, stub, ratio) of the CSV: C's measurements first, then the
    stub's own; a ratio only where both sides have a figure and C's is positive."""
    rows = []
    for name in list(c) + [n for n in stub if n not in c]:
        cv = c[name][0] if name in c else ""
        sv = stub[name][0] if name in stub else ""
        unit = (stub.get(name) or c[name])[1]
        ratio = "%.2f" % (float(sv) / float(cv)) if cv and sv and float(cv) > 0 else ""
        rows.append((name, unit, cv, sv, ratio))
    return rows


def table(rows, repeat, sets, loads):
    lines = ["Xen 4.17 in QEMU (TCG): the same workload with C xenstored (dom0) and with the stub domain"]
    if repeat != 1:
        lines.append(f"(medians of {repeat} runs per side)")
    if sets:
        lines.append("scenario settings:" + "".join(f" {s}" for s in sets))
    lines.append(f"host: {os.cpu_count()} CPUs; 1-min load average before -> after each run: "
                 + " ".join(f"{load};" for load in loads))
    lines.append("")
    w = max([len(r[0]) for r in rows], default=0)
    fmt = "%-" + str(w) + "s  %-5s %12s %12s %8s"
    lines.append(fmt % ("measurement", "unit", "C", "stub", "stub/C"))
    groups = {}  # group -> [n, sum of log(ratio)]
    times = [0, 0.0]
    for name, unit, cv, sv, ratio in rows:
        lines.append(fmt % (name, unit, cv or "n/a", sv or "n/a", ratio or "n/a"))
        if ratio and float(ratio) > 0:
            group = name.split(".", 1)[0]
            g = groups.setdefault(group, [0, 0.0])
            g[0] += 1
            g[1] += math.log(float(ratio))
            # Times only: CPU use (ms/s, cpu.*) says how busy, not how fast.
            if unit != "ms/s" and group != "cpu":
                times[0] += 1
                times[1] += math.log(float(ratio))
    lines.append("")
    lines.append("Geometric mean of stub/C per group (lower = stub faster):")
    for group, (n, total) in groups.items():
        lines.append("  %-9s %6.2f  (n=%d)" % (group, math.exp(total / n), n))
    if times[0]:
        lines.append("  %-9s %6.2f  (n=%d; every time, not the CPU figures)"
                     % ("times", math.exp(times[1] / times[0]), times[0]))
    return "\n".join(lines) + "\n"


def main(argv):
    opts = parse(argv)
    common.run_setup(WHO)
    started = time.monotonic()
    os.makedirs(OUT, exist_ok=True)
    stub = stub_image(opts["kernel"])
    sets = [a for s in opts["sets"] for a in ("--set", s)]

    runs = {"c": [], "stub": []}
    failures, loads = [], []
    runs_csv = os.path.join(OUT, "xen-results-runs.csv")
    with open(runs_csv, "w") as f:
        f.write("side,round,measurement,value,unit\n")
    for rnd in range(1, opts["repeat"] + 1):
        for side in ("c", "stub") if rnd % 2 else ("stub", "c"):
            log = os.path.join(OUT, f"xen-in-qemu-bench-{side}-{rnd}.log")
            args = ["bench", "--xen", opts["xen"], "--xenstore", side, "--log", log, *sets]
            if side == "stub":
                args += ["--kernel", stub]
            if opts["timeout"]:
                args += ["--timeout", opts["timeout"]]
            say()
            say(f"round {rnd}/{opts['repeat']}, {SIDES[side]}: tests/xen-in-qemu/run.sh {' '.join(args)}")
            t0 = time.monotonic()
            load0 = load_average()
            status = subprocess.run([RUN_SH, *args]).returncode
            load1 = load_average()
            secs = int(time.monotonic() - t0)
            loads.append(f"{side}-{rnd}: {load0} -> {load1} ({secs} s)")
            say(f"round {rnd}, {SIDES[side]}: exit status {status} after {secs} s")
            figures = extract(log) if os.path.isfile(log) else []
            runs[side].append(figures)
            with open(runs_csv, "a") as f:
                f.writelines(f"{side},{rnd},{name},{value},{unit}\n" for name, value, unit in figures)
            if status != 0 or not figures:
                failures.append(f"the {SIDES[side]} run (round {rnd}) FAILED: {why_failed(status, figures, log)}; "
                                f"serial log {log}")

    rows = comparison(medians(runs["c"]), medians(runs["stub"]))
    csv = os.path.join(OUT, "xen-results.csv")
    with open(csv, "w") as f:
        f.write("measurement,unit,c,stub,ratio_stub_c\n")
        f.writelines(",".join(row) + "\n" for row in rows)
    text = table(rows, opts["repeat"], opts["sets"], loads)
    with open(os.path.join(OUT, "xen-results.txt"), "w") as f:
        f.write(text)
    print()
    print(text)
    print(f"CSV: {csv} (every run: {runs_csv}); serial logs: {OUT}/xen-in-qemu-bench-*.log")
    elapsed = int(time.monotonic() - started)
    print(f"wall time: {elapsed // 60} min {elapsed % 60} s", flush=True)
    for failure in failures:
        say(failure)
    return 1 if failures else 0


# ---------------------------------------------------------------------------------------
# Self-check (`python3 tests/harness bench-xen-check`): the figures of fixed serial logs
# through extract, medians, the CSV and the table, against what bench/xen-in-qemu.sh printed
# for the same logs when it was bash and awk (a changed format is a changed CSV for everyone
# who compares runs). Needs nothing but Python; takes well under a second.

# (side, round) -> serial log. Covers: the indented copy at the end winning, a guest's line
# that only looks like a figure, trailing blanks, a value with leading zeros, medians of an
# even count, of 1000 and more, and with more than two decimals, a figure on one side only,
# a C figure of 0 (no ratio), a CPU-use unit (not in "times"), the cpu group.
CHECK_LOGS = {
    ("c", 1): """(XEN) Xen version 4.17
BENCH tx.read 10001 ns
INFO: BENCH tx.write 2007 ns
BENCH tx.small 0.125 ms
BENCH guest.boot-med 3.5 s
(d3) xBENCH guest.fake 1 s
BENCH idle.xenstore 11.25 ms/s
BENCH cpu.tx 31 ms
BENCH c.zero 0 ms
BENCH c.only 007 ms
BENCH-RESULTS BEGIN
    BENCH tx.read 11001 ns   
BENCH-RESULTS END
SCENARIO DONE
""",
    ("c", 2): """BENCH tx.read 10004 ns
BENCH tx.write 2028 ns
BENCH tx.small 0.13 ms
BENCH guest.boot-med 12.5 s
BENCH idle.xenstore 14.2 ms/s
BENCH cpu.tx 34 ms
BENCH c.zero 0 ms
STEP bench-guests: FAIL boom
""",
    ("stub", 1): """BENCH tx.read 1000.5 ns
BENCH tx.write 2014 ns
BENCH tx.small 0.62 ms
BENCH guest.boot-med 6.5 s
BENCH idle.xenstore 12.333 ms/s
BENCH cpu.tx 32 ms
BENCH stub.only 5 ms
SCENARIO DONE
""",
    ("stub", 2): """BENCH tx.read 1001 ns
BENCH tx.write 2021 ns
BENCH tx.small 0.6 ms
BENCH guest.boot-med 9.5 s
BENCH idle.xenstore 13.25 ms/s
BENCH cpu.tx 33 ms
SCENARIO DONE
""",
}
# What the bash version wrote for CHECK_LOGS (--repeat 2 --set A=1 --set "B=two words").
CHECK_CSV = """\
measurement,unit,c,stub,ratio_stub_c
tx.read,ns,10502,1001,0.10
tx.write,ns,2018,2018,1.00
tx.small,ms,0.13,0.61,4.69
guest.boot-med,s,8,8,1.00
idle.xenstore,ms/s,12.72,12.79,1.01
cpu.tx,ms,32.5,32.5,1.00
c.zero,ms,0,,
c.only,ms,7,,
stub.only,ms,,5,
"""
CHECK_TABLE = """\
Xen 4.17 in QEMU (TCG): the same workload with C xenstored (dom0) and with the stub domain
(medians of 2 runs per side)
scenario settings: A=1 B=two words

measurement     unit             C         stub   stub/C
tx.read         ns           10502         1001     0.10
tx.write        ns            2018         2018     1.00
tx.small        ms            0.13         0.61     4.69
guest.boot-med  s                8            8     1.00
idle.xenstore   ms/s         12.72        12.79     1.01
cpu.tx          ms            32.5         32.5     1.00
c.zero          ms               0          n/a      n/a
c.only          ms               7          n/a      n/a
stub.only       ms             n/a            5      n/a

Geometric mean of stub/C per group (lower = stub faster):
  tx          0.78  (n=3)
  guest       1.00  (n=1)
  idle        1.01  (n=1)
  cpu         1.00  (n=1)
  times       0.83  (n=4; every time, not the CPU figures)
"""


def check(_argv):
    import tempfile
    runs = {"c": [], "stub": []}
    with tempfile.TemporaryDirectory() as tmp:
        for (side, rnd), text in sorted(CHECK_LOGS.items()):
            path = os.path.join(tmp, f"{side}-{rnd}.log")
            with open(path, "w") as f:
                f.write(text)
            runs[side].append(extract(path))
        why = why_failed(1, runs["c"][1], os.path.join(tmp, "c-2.log"))
    rows = comparison(medians(runs["c"]), medians(runs["stub"]))
    csv = "measurement,unit,c,stub,ratio_stub_c\n" + "".join(",".join(row) + "\n" for row in rows)
    text = table(rows, 2, ["A=1", "B=two words"], ["c-1: 0.50 -> 0.70 (300 s)", "stub-1: 0.70 -> 0.90 (280 s)"])
    # The host line names this machine's CPU count: compared without it.
    text = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("host: "))
    problems = []
    for what, got, want in (("CSV", csv, CHECK_CSV), ("table", text, CHECK_TABLE)):
        if got != want:
            problems.append(f"the {what} differs:\n--- expected\n{want}--- got\n{got}")
    want_why = "run.sh exit status 1, failed steps: bench-guests, the scenario did not finish"
    if why != want_why:
        problems.append(f"failure reason {why!r}, expected {want_why!r}")
    for problem in problems:
        print(f"FAIL {problem}")
    print(f"bench-xen check: {'FAIL' if problems else 'PASS'}")
    return 1 if problems else 0
