"""What every sub-command shares: the repository, its set-up, commands with a time limit,
and the stub image built with cargo."""

import json
import os
import signal
import subprocess
import sys

# tests/harness/common.py -> the repository's root.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The exit status of a command stopped at its time limit: coreutils `timeout`'s, which the
# shell versions of these tools reported.
TIMED_OUT = 124
# ... and of a program that cannot be run (missing, not executable), the shell's.
CANNOT_RUN = 127


def run_setup(who, *options):
    """Runs tests/lib/setup.sh (the one set-up of every entry point) or exits with status 1:
    a check whose tools cannot be installed must fail, not skip."""
    if subprocess.run([os.path.join(REPO, "tests", "lib", "setup.sh"), *options]).returncode != 0:
        print(f"{who}: set-up failed (tests/lib/setup.sh)", file=sys.stderr)
        sys.exit(1)


class Result:
    """A finished command: its exit status (TIMED_OUT when it was stopped) and output."""

    def __init__(self, status, out, err):
        self.status, self.out, self.err = status, out, err

    def text(self, limit=None):
        data = self.out if limit is None else self.out[:limit]
        return data.decode("utf-8", errors="replace")

    def err_text(self, limit=None):
        data = self.err if limit is None else self.err[:limit]
        return data.decode("utf-8", errors="replace")


def run(argv, timeout, merge=False, env=None):
    """Runs argv with stdin closed; stdout and stderr kept apart (merge: stderr into stdout).
    A command still running after `timeout` seconds is killed with its process group, so a
    client blocked on a dead daemon cannot hang the tool; its partial output is kept."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT if merge else subprocess.PIPE,
                                env=env, start_new_session=True)
    except OSError as e:
        # As a shell reports a program it cannot run: the check fails, the tool goes on.
        message = f"cannot run {argv[0]}: {e}".encode()
        return Result(CANNOT_RUN, message if merge else b"", b"" if merge else message)
    try:
        out, err = proc.communicate(timeout=timeout)
        return Result(proc.returncode, out, err or b"")
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        return Result(TIMED_OUT, out or b"", err or b"")


def kill_group(proc, sig=signal.SIGKILL):
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def cargo_target_dir():
    """The target folder as cargo sees it (CARGO_TARGET_DIR, .cargo/config.toml, or
    target/), absolute; falls back to CARGO_TARGET_DIR or target/ when cargo metadata fails."""
    try:
        meta = subprocess.run(["cargo", "metadata", "--no-deps", "--format-version", "1"], cwd=REPO,
                              stdout=subprocess.PIPE, check=True)
        target = json.loads(meta.stdout)["target_directory"]
    except (OSError, subprocess.CalledProcessError, ValueError, KeyError):
        target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
    return os.path.join(REPO, target)  # join keeps an absolute target as it is


STUB_BUILD = ["cargo", "build", "--release", "--target", "x86_64-unknown-none", "-p", "xenstore-stubdom"]


def build_stub():
    """Builds the stub image as tests/xen-in-qemu/run.sh does; returns its path, or None
    with the reason printed (cargo's own messages are on stderr)."""
    if subprocess.run(STUB_BUILD, cwd=REPO).returncode != 0:
        return None
    return os.path.join(cargo_target_dir(), "x86_64-unknown-none", "release", "xenstore-stubdom")
