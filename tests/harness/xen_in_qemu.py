"""Xen-in-QEMU: boots Xen with a Debian Linux 6.1 PV dom0 inside QEMU (TCG, no KVM needed)
and runs one test scenario in dom0.

Usage: tests/xen-in-qemu/run.sh SCENARIO [options]
       tests/xen-in-qemu/run.sh --interactive [SCENARIO]      (default scenario: shell)
       (= python3 tests/harness xen-in-qemu ...)
  SCENARIO          a name from tests/xen-in-qemu/scenarios/ (main, stub-xenstore,
                    guest-lifecycle, hostile-ring, self-test, linux-guest, shell,
                    bench: see bench/xen-in-qemu.sh) or the path of a scenario file
  --xen VERSION     the Xen to boot: 4.17 (default: Debian bookworm's packages), 4.20
                    (Debian trixie's, through a private apt configuration) or 4.22 (the
                    build in ../shared/xen, or $XEN_4_22_DIST); see dom0_base.py. A
                    version that cannot be had here fails the run (never a skip).
  --timeout SECONDS time limit for the boot-to-power-off run (default: the scenario's
                    `harness-timeout:`, else 600)
  --kernel IMAGE    stub image copied into dom0 (/harness/stub/xenstore-stubdom); default
                    for scenarios that need it: the product image, built with
                    tests/lib/kernel-image.sh product (`cargo kernel`)
  --test-kernel IMAGE  the stub's test image, with the test modes --self-test and
                    --hostile-ring (/harness/stub/xenstore-stubdom-test); default for
                    scenarios that need it: built with tests/lib/kernel-image.sh test
  --interactive     run the scenario, then leave a dom0 shell on the serial console
                    (Ctrl-A x quits QEMU); no pass/fail summary
  --keep            keep the work folder (initramfs, configuration)
  --log FILE        serial console log (default /tmp/xen-in-qemu-SCENARIO[-XENSTORE][-xVERSION].log,
                    the version only when it is not 4.17)
  --verbose         echo the whole serial console, not just milestones and steps
  --xenstore c|stub which xenstore scenarios declaring `harness-needs: xenstore` run on
                    (default: $XENSTORE, else stub): stub = init-xenstore-domain with the
                    stub image, c = the version's C xenstored in dom0
  --set NAME=VALUE  extra scenario variable (repeatable), e.g. --set ROUNDS=5
  --hostile-kernel IMAGE  (or $HOSTILE_GUEST_KERNEL) a PVH image that scribbles on its
                    xenstore ring, for the hostile-ring scenario (default there: the test
                    image in --hostile-ring mode)
  --tcg-thread single|multi  QEMU's TCG threading (default: $XEN_QEMU_TCG_THREAD, else
                    multi, one host thread per vCPU)

What it does: runs tests/lib/setup.sh (kernel target, QEMU), gets the chosen Xen version's
base (hypervisor, dom0 kernel, dom0 initramfs with the Xen tools and their libraries; built
from Debian packages or the shared build and cached, see dom0_base.py), adds the scenario and
its files, boots QEMU and watches the serial console (xen_qemu.py: time limit, steps, stalls,
the stub's panics, summary). Exit status: 0 only if every step passed, no expected step is
missing and the scenario finished; 1 on test failure; 2 on usage errors.

A stalled emulated machine is booted once more: when one of QEMU's vCPU threads has not run
at all for XEN_QEMU_STALL_SECONDS (default 60; 0 turns the watch off), the run stops QEMU and
the scenario runs again from a fresh boot (the stalled run's log is kept as LOG.stalled).
Seen under TCG: Xen idle on a vCPU whose emulated global interrupt flag stayed clear.
XEN_QEMU_STALL_RETRIES (default 1) is how many fresh boots are tried.

Experiments: XEN_QEMU_CPU (QEMU's -cpu), XEN_QEMU_ACCEL (-accel; KVM is untried here and the
stall watch then watches nothing), XEN_EXTRA_ARGS (words for Xen's command line),
XEN_QEMU_EXTRA (words for QEMU's command line).

Scenario files (scenarios/NAME.sh, run by dom0's /init under busybox sh, with
lib/dom0-lib.sh sourced) print `STEP <name>: PASS|FAIL [detail]`; /init prints
`SCENARIO DONE` afterwards and powers off. Header lines a scenario may carry:
  # harness-expect: STEP...      steps that must appear (a missing one fails the run)
  # harness-needs: WORD...       see NEEDS below
  # harness-timeout: SECONDS     default time limit
A folder scenarios/NAME.files/ is copied into dom0 as $FILES_DIR (/harness/files).
See tests/xen-in-qemu/README.md.
"""

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

from . import common, debian, dom0_base
from .xen_qemu import EXIT_STALLED, run_qemu, write_cpio

HERE = os.path.join(common.REPO, "tests", "xen-in-qemu")
SCENARIOS = os.path.join(HERE, "scenarios")

# What a scenario may declare with `harness-needs:`, and what each word puts into dom0.
NEEDS = {
    "stub": "the stub's product image as $STUB_KERNEL (see --kernel)",
    "test-stub": "the stub's test image as $TEST_STUB_KERNEL (see --test-kernel)",
    "stub-images": "both images (product and test, built or given as for stub and test-stub) "
                   "copied with `objcopy --strip-debug` on the host, as $STUB_KERNEL_STRIPPED and "
                   "$TEST_STUB_KERNEL_STRIPPED: smaller uploads for xenstore-control live-update",
    "xenstore": "runs on the xenstore chosen by --xenstore (the stub image too when that is stub)",
    "linux-kernel": "Debian's kernel as $GUEST_KERNEL (PVH guests)",
    "linux-vmlinux": "the same, decompressed (ELF vmlinux): much faster `xl create` under TCG",
    "ringpoke": "tools/ringpoke.c built with cc, $RINGPOKE",
    "guest:NAME": "guests/NAME/ + busybox as an initramfs, $GUEST_DIR/NAME.cpio.gz",
}

# Xen's command line: docs/xen-interface.md, "Xen in QEMU". conring_size lets `xl dmesg` in
# dom0 still see early guest lines after Xen's boot messages. spec-ctrl=eager-fpu: with
# lazy FPU switching on the AMD CPU that TCG emulates, user space in dom0 and guests was
# corrupted whenever domains shared a CPU (emulation-stress: 2-7 killed programs per run
# before, 0 after).
XEN_ARGS = ("console=com1 com1=115200 dom0_mem=1024M,max:1024M loglvl=all guest_loglvl=all noreboot "
            "conring_size=1M spec-ctrl=eager-fpu")
QEMU_CPU = "max,-pku,-smap,-smep,-la57,-rdtscp"

START = time.monotonic()


def say(message):
    elapsed = time.monotonic() - START
    print(f"[run.sh {elapsed:6.1f}s] {message}", file=sys.stderr, flush=True)


class UsageError(Exception):
    pass


class Failure(Exception):
    pass


class Scenario:
    """A scenario file and what its header declares."""

    def __init__(self, name_or_path):
        if os.path.isfile(name_or_path):
            self.path = os.path.abspath(name_or_path)
        else:
            self.path = os.path.join(SCENARIOS, name_or_path + ".sh")
            if not os.path.isfile(self.path):
                available = sorted(n[:-3] for n in os.listdir(SCENARIOS) if n.endswith(".sh"))
                raise UsageError(f"no scenario '{name_or_path}' (available: {' '.join(available)})")
        self.name = os.path.basename(self.path)[:-3] if self.path.endswith(".sh") else os.path.basename(self.path)
        with open(self.path, encoding="utf-8") as f:
            text = f.read()
        self.directives = {}
        for match in re.finditer(r"^# *harness-([a-z]+): *(.*)$", text, re.M):
            self.directives.setdefault(match.group(1), []).extend(match.group(2).split())
        self.needs = self.directives.get("needs", [])
        for word in self.needs:
            if word not in NEEDS and not word.startswith("guest:"):
                raise UsageError(f"scenario {self.name}: unknown harness-needs word '{word}'")
        expect = self.directives.get("expect", [])
        self.expect = expect if "dom0-setup" in expect else ["dom0-setup", *expect]
        timeouts = self.directives.get("timeout", [])
        self.timeout = int(timeouts[0]) if timeouts else 600
        self.files = os.path.join(SCENARIOS, self.name + ".files")


def parse(argv):
    parser = argparse.ArgumentParser(prog="tests/xen-in-qemu/run.sh", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, add_help=True)
    parser.add_argument("scenario", nargs="?")
    parser.add_argument("--xen", default=dom0_base.DEFAULT_VERSION, choices=sorted(dom0_base.VERSIONS))
    parser.add_argument("--timeout", type=int)
    parser.add_argument("--kernel")
    parser.add_argument("--test-kernel")
    parser.add_argument("--interactive", action="store_true")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--log")
    parser.add_argument("--verbose", "-v", action="store_true")
    parser.add_argument("--xenstore", default=os.environ.get("XENSTORE") or "stub", choices=["c", "stub"])
    parser.add_argument("--set", action="append", default=[], dest="sets")
    parser.add_argument("--hostile-kernel", default=os.environ.get("HOSTILE_GUEST_KERNEL") or "")
    parser.add_argument("--tcg-thread", default=os.environ.get("XEN_QEMU_TCG_THREAD") or "multi",
                        choices=["single", "multi"])
    args = parser.parse_args(argv)
    if args.scenario is None:
        if not args.interactive:
            raise UsageError("a scenario is needed (or --interactive)")
        args.scenario = "shell"
    for option in ("kernel", "test_kernel", "hostile_kernel"):
        value = getattr(args, option)
        if value:
            if not os.path.isfile(value):
                raise UsageError(f"--{option.replace('_', '-')} {value}: no such file")
            setattr(args, option, os.path.abspath(value))
    for pair in args.sets:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", pair, re.S):
            raise UsageError(f"--set wants NAME=VALUE, got '{pair}'")
    return args


def stub_images(args, scenario, xenstore):
    """(product image or "", test image or ""), built when the scenario needs them."""
    stub = args.kernel or ""
    if not stub and ("stub" in scenario.needs or "stub-images" in scenario.needs
                     or ("xenstore" in scenario.needs and xenstore == "stub")):
        say("building the stub's product image (tests/lib/kernel-image.sh product)")
        stub = common.kernel_image("product")
        if not stub:
            raise Failure("the stub image does not build (cargo kernel); fix it or pass --kernel IMAGE")
    test_stub = args.test_kernel or ""
    if not test_stub and ("test-stub" in scenario.needs or "stub-images" in scenario.needs):
        say("building the stub's test image (tests/lib/kernel-image.sh test)")
        test_stub = common.kernel_image("test")
        if not test_stub:
            raise Failure("the stub's test image does not build (cargo kernel-test); fix it or pass --test-kernel IMAGE")
    for image in (stub, test_stub):
        if image:
            with open(image, "rb") as f:
                if f.read(4) != b"\x7fELF":
                    say(f"warning: {image} is not an ELF file")
            say(f"stub image: {image} ({os.path.getsize(image)} bytes)")
    return stub, test_stub


def guest_initramfs(name, base, work, out):
    """guests/NAME/ with busybox (and the Debian packages its harness-packages lists, with
    their libraries) as an initramfs."""
    source = os.path.join(HERE, "guests", name)
    if not os.path.isdir(source):
        raise Failure(f"scenario needs guest '{name}' but {source}/ does not exist")
    root = os.path.join(work, f"guest-{name}")
    shutil.copytree(source, root, symlinks=True)
    for folder in ("bin", "dev", "proc", "sys", "tmp"):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
    shutil.copy2(base.file("busybox"), os.path.join(root, "bin", "busybox"))
    listed = os.path.join(root, "harness-packages")
    if os.path.exists(listed):
        with open(listed) as f:
            packages = " ".join(line.split("#")[0] for line in f).split()
        os.unlink(listed)
        if packages:
            # Bookworm's packages from the host's lists, with the host's libraries.
            archive = dom0_base.host_archive()
            stage = os.path.join(work, f"guest-stage-{name}")
            archive.unpack(archive.candidates(packages), stage)
            for folder in ("bin", "sbin", "usr/bin", "usr/sbin", "usr/lib", "lib"):
                if os.path.isdir(os.path.join(stage, folder)):
                    shutil.copytree(os.path.join(stage, folder), os.path.join(root, folder), symlinks=True,
                                    dirs_exist_ok=True)
            dom0_base.remove_dangling_links(root)
            dom0_base.complete_libraries(root, from_host=True)
    write_cpio(out, root, ["dev/console:c:5:1"])


def overlay(args, scenario, base, xenstore, stub, test_stub, work):
    """The per-run part of dom0's initramfs: /init, the scenario, its files and guests, and
    /harness/config (the variables lib/dom0-lib.sh documents)."""
    root = os.path.join(work, "overlay")
    harness = os.path.join(root, "harness")
    os.makedirs(harness)
    shutil.copy2(os.path.join(HERE, "lib", "dom0-init"), os.path.join(root, "init"))
    os.chmod(os.path.join(root, "init"), 0o755)
    shutil.copy2(os.path.join(HERE, "lib", "dom0-lib.sh"), os.path.join(harness, "lib.sh"))
    shutil.copy2(scenario.path, os.path.join(harness, "scenario.sh"))
    version = base.version
    config = {
        "SCENARIO": scenario.name, "INTERACTIVE": "1" if args.interactive else "0",
        "STUB_KERNEL": "", "TEST_STUB_KERNEL": "", "REPO_XEN_CFG": "", "GUEST_KERNEL": "",
        "GUEST_DIR": "/harness/guests", "FILES_DIR": "", "XENSTORE": xenstore,
        "HOSTILE_GUEST_KERNEL": "", "RINGPOKE": "", "STUB_KERNEL_STRIPPED": "", "TEST_STUB_KERNEL_STRIPPED": "",
        "XEN_VERSION": version.name, "XEN_TOOLS_PATH": version.tools_path, "XL_PROGRAM": version.xl,
        "TEST_XENSTORE": version.test_xenstore,
    }

    def place(source, dom0_path, variable=None):
        target = os.path.join(root, dom0_path.lstrip("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(source, target)
        if variable:
            config[variable] = dom0_path

    if stub:
        place(stub, "/harness/stub/xenstore-stubdom", "STUB_KERNEL")
    if test_stub:
        place(test_stub, "/harness/stub/xenstore-stubdom-test", "TEST_STUB_KERNEL")
    if args.hostile_kernel:
        place(args.hostile_kernel, "/harness/hostile/kernel", "HOSTILE_GUEST_KERNEL")
    if os.path.isfile(os.path.join(common.REPO, "xen.cfg")):
        place(os.path.join(common.REPO, "xen.cfg"), "/harness/repo/xen.cfg", "REPO_XEN_CFG")
    if os.path.isdir(scenario.files):
        shutil.copytree(scenario.files, os.path.join(harness, "files"), symlinks=True)
        config["FILES_DIR"] = "/harness/files"
    for word in scenario.needs:
        if word == "linux-kernel":
            place(base.file("vmlinuz"), "/harness/guest/vmlinuz", "GUEST_KERNEL")
        elif word == "linux-vmlinux":
            place(base.vmlinux(), "/harness/guest/vmlinux", "GUEST_KERNEL")
        elif word == "ringpoke":
            # tools/ringpoke.c, built with the host's C compiler (dom0 runs the host's glibc
            # with 4.17 and 4.22; it links only against libc and libdl).
            if shutil.which("cc") is None:
                raise Failure("scenario needs ringpoke, but there is no C compiler (cc) on the host")
            os.makedirs(os.path.join(harness, "bin"), exist_ok=True)
            built = subprocess.run(["cc", "-O2", "-o", os.path.join(harness, "bin", "ringpoke"),
                                    os.path.join(HERE, "tools", "ringpoke.c"), "-ldl"])
            if built.returncode != 0:
                raise Failure("cannot build tools/ringpoke.c")
            config["RINGPOKE"] = "/harness/bin/ringpoke"
        elif word == "stub-images":
            # Both builds without their debug sections (the product image shrinks from ~2.8 MB
            # to ~0.4 MB): what a live update uploads in 2 KiB chunks, one request each.
            if shutil.which("objcopy") is None:
                raise Failure("scenario needs stub-images, but there is no objcopy on the host (binutils)")
            for image, name, variable in ((stub, "xenstore-stubdom", "STUB_KERNEL_STRIPPED"),
                                          (test_stub, "xenstore-stubdom-test", "TEST_STUB_KERNEL_STRIPPED")):
                if not image:
                    raise Failure(f"scenario needs stub-images, but there is no {name} image")
                dom0_path = f"/harness/stub/stripped/{name}"
                target = os.path.join(root, dom0_path.lstrip("/"))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                if subprocess.run(["objcopy", "--strip-debug", image, target]).returncode != 0:
                    raise Failure(f"objcopy --strip-debug {image} failed")
                say(f"stripped copy for dom0: {dom0_path} ({os.path.getsize(target)} bytes, from {image})")
                config[variable] = dom0_path
        elif word.startswith("guest:"):
            name = word[len("guest:"):]
            os.makedirs(os.path.join(harness, "guests"), exist_ok=True)
            guest_initramfs(name, base, work, os.path.join(harness, "guests", f"{name}.cpio.gz"))
    lines = [f"{name}={shlex.quote(value)}" for name, value in config.items()]
    lines.append("export " + " ".join(config))
    for pair in args.sets:
        name, _, value = pair.partition("=")
        lines += [f"{name}={shlex.quote(value)}", f"export {name}"]
    with open(os.path.join(harness, "config"), "w") as f:
        f.write("\n".join(lines) + "\n")
    archive = os.path.join(work, "overlay.cpio.gz")
    write_cpio(archive, root, [])
    dom0 = os.path.join(work, "dom0.cpio.gz")
    with open(dom0, "wb") as out:
        # The kernel unpacks concatenated gzip'ed cpio archives in order.
        for part in (base.file("base.cpio.gz"), archive):
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out)
    say(f"dom0 initramfs: {os.path.getsize(dom0) >> 20} MiB (base + {os.path.getsize(archive) >> 10} KiB "
        f"for scenario {scenario.name})")
    return dom0


def qemu_command(args, base, initramfs):
    xen_args = XEN_ARGS + (" " + os.environ["XEN_EXTRA_ARGS"] if os.environ.get("XEN_EXTRA_ARGS") else "")
    # debug-threads names the vCPU threads `CPU K/TCG`, which the stall watch needs.
    command = ["qemu-system-x86_64", "-name", "xen-in-qemu,debug-threads=on", "-machine", "q35",
               "-accel", os.environ.get("XEN_QEMU_ACCEL") or f"tcg,thread={args.tcg_thread}",
               "-cpu", os.environ.get("XEN_QEMU_CPU") or QEMU_CPU,
               "-smp", "2", "-m", "2048", "-no-reboot", "-display", "none",
               "-kernel", base.file("xen"), "-append", xen_args,
               "-initrd", f"{base.file('vmlinuz')} console=hvc0 quiet,{initramfs}"]
    command += (os.environ.get("XEN_QEMU_EXTRA") or "").split()
    return command


def boot(args, scenario, timeout, log, command, work):
    if args.interactive:
        say(f"booting interactively; serial console log: {log} (Ctrl-A x quits QEMU, Ctrl-A c: QEMU monitor)")
        status = subprocess.run(command + ["-chardev", f"stdio,id=con,mux=on,signal=off,logfile={log}",
                                           "-serial", "chardev:con", "-mon", "chardev=con,mode=readline"]).returncode
        say(f"QEMU exited with status {status}")
        return status
    retries = int(os.environ.get("XEN_QEMU_STALL_RETRIES") or 1)
    stalls = 0
    while True:
        say(f"booting scenario '{scenario.name}' on Xen {args.xen} (time limit {timeout}s; "
            f"expected steps: {' '.join(scenario.expect)})")
        # Where the console of this boot is kept if it stalls: LOG.stalled, LOG.stalled-2, ...
        stalled_log = log + ".stalled" + (f"-{stalls + 1}" if stalls else "")
        watched = argparse.Namespace(
            log=log, timeout=float(timeout), expect=" ".join(scenario.expect), name=scenario.name,
            verbose=args.verbose, stall_seconds=float(os.environ.get("XEN_QEMU_STALL_SECONDS") or 60),
            retries_file=os.path.join(work, "retries"), stalled_log=stalled_log,
            qemu=command + ["-monitor", "none", "-serial", "stdio"])
        status = run_qemu(watched)
        # EXIT_STALLED: the machine stalled and no step had failed (a stall after a FAIL or the
        # stub's panic is status 1: a fresh boot must not hide it).
        if status != EXIT_STALLED:
            return status
        os.replace(log, stalled_log)
        stalls += 1
        if retries <= 0:
            say(f"the emulated machine stalled (log: {stalled_log}); no retries left")
            return 1
        retries -= 1
        say(f"the emulated machine stalled (log: {stalled_log}); booting it again (a retry, listed in the next summary)")


def main(argv):
    try:
        args = parse(argv)
        scenario = Scenario(args.scenario)
    except UsageError as e:
        print(f"run.sh: {e}", file=sys.stderr)
        return 2
    xenstore = args.xenstore if "xenstore" in scenario.needs else ""
    version_suffix = "" if args.xen == dom0_base.DEFAULT_VERSION else f"-x{args.xen}"
    log = args.log or f"/tmp/xen-in-qemu-{scenario.name}{'-' + xenstore if xenstore else ''}{version_suffix}.log"
    timeout = args.timeout or scenario.timeout
    common.run_setup("run.sh")
    for tool in ("gzip", "apt-get", "apt-cache", "dpkg", "qemu-system-x86_64"):
        if shutil.which(tool) is None:
            print(f"run.sh: error: '{tool}' is required on the host", file=sys.stderr)
            return 1
    work = tempfile.mkdtemp(prefix="xen-in-qemu.")
    try:
        base = dom0_base.prepare(args.xen)
        if "," in base.path + work or " " in base.path + work:
            raise Failure(f"paths must not contain commas or spaces (QEMU -initrd syntax): {base.path}, {work}")
        stub, test_stub = stub_images(args, scenario, xenstore)
        initramfs = overlay(args, scenario, base, xenstore, stub, test_stub, work)
        os.makedirs(os.path.dirname(os.path.abspath(log)), exist_ok=True)
        status = boot(args, scenario, timeout, log, qemu_command(args, base, initramfs), work)
    except (Failure, dom0_base.BaseError, debian.AptError) as e:
        print(f"run.sh: error: {e}", file=sys.stderr)
        status = 1
    finally:
        if args.keep:
            say(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    say(f"total wall time (including preparation); result: {'PASS' if status == 0 else 'FAIL'}")
    return status
