"""What every sub-command shares: the repository, its set-up, commands with a time limit,
and the stub image built with cargo."""

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


def kernel_image(kind):
    """Builds the stub's `product` or `test` image with tests/lib/kernel-image.sh (the one
    build every entry point that boots the kernel uses) and returns its path, or None when
    it does not build (cargo's messages are on stderr)."""
    built = subprocess.run([os.path.join(REPO, "tests", "lib", "kernel-image.sh"), kind], stdout=subprocess.PIPE)
    lines = built.stdout.decode("utf-8", errors="replace").splitlines()
    return lines[-1] if built.returncode == 0 and lines else None
