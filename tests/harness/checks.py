"""The PASS/FAIL reporter of a list of checks.

Every check prints `PASS <name>` or `FAIL <name>[: <detail>]`; finish() lists the failed
ones and prints the last line, `N passed, M failed`, and returns the exit status (non-zero
when any failed). There is no third outcome: a check that cannot run is a FAIL."""


class Stop(Exception):
    """Raised by fatal(): nothing after this check can run; finish() still reports."""


class Checks:
    def __init__(self):
        self.passed = 0
        self.failures = []

    def ok(self, name):
        print(f"PASS {name}", flush=True)
        self.passed += 1

    def fail(self, name, detail=""):
        print(f"FAIL {name}" + (f": {detail}" if detail else ""), flush=True)
        self.failures.append(name)

    def check(self, name, passed, detail=""):
        """ok() or fail() by `passed`; returns `passed`."""
        if passed:
            self.ok(name)
        else:
            self.fail(name, detail)
        return passed

    def fatal(self, name, detail=""):
        """A failed check that everything after it depends on: reports it and stops."""
        self.fail(name, detail)
        raise Stop(name)

    def finish(self):
        if self.failures:
            print("failed checks:")
            for name in self.failures:
                print(f"  {name}")
        print(f"{self.passed} passed, {len(self.failures)} failed", flush=True)
        return 1 if self.failures else 0
