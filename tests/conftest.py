"""Shared test helpers: where the code is and how to run it under each interpreter.

Tests that exercise pure logic (parser, replay, decisions, UCI translation) run the real
`tunmon.py` command line under CPython and under the MicroPython unix port, through the
`interp` fixture, so both interpreters are held to the same expected output.
"""
import contextlib
import os
import shutil
import signal
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUNMON = os.path.join(ROOT, "tunmon.py")

# procd starts a service with SIGHUP at its default.  Under nohup every daemon the suite
# starts would inherit an ignored SIGHUP, which the no-ffi MicroPython fallback (it cannot
# catch signals) keeps, and its test of what SIGHUP does would fail.  A handler that does
# nothing keeps the suite itself immune, as nohup meant, and exec resets it for children.
if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
    signal.signal(signal.SIGHUP, lambda signum, frame: None)


def micropython_path():
    """The test MicroPython: the venv's, else one on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "micropython")
    return here if os.path.exists(here) else shutil.which("micropython")


INTERPRETERS = {"cpython": [sys.executable, "-u"], "micropython": None}


def interpreter_command(name):
    if name == "cpython":
        return [sys.executable, "-u"]
    path = micropython_path()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("micropython is not installed (make test installs it into .venv)")
        pytest.skip("micropython is not installed; run the suite through `make test`")
    return [path]


@pytest.fixture(params=["cpython", "micropython"])
def interp(request):
    """Command prefix that runs a Python file under one interpreter."""
    return interpreter_command(request.param)


@contextlib.contextmanager
def small_tmpfs(path, size):
    """A tmpfs of `size` ("12k") mounted on the new directory `path`: a /var/run that fills
    up.  Skips where mounting is refused, but fails under CI, which runs as root."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + size, "tmpfs", str(path)],
                             capture_output=True)
    if mounted.returncode != 0:
        reason = "cannot mount a small tmpfs here: %s" % mounted.stderr.decode().strip()
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI=true: a skip here is a failure)")
        pytest.skip(reason)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def example_count(ci, soak, override_variable):
    """Hypothesis examples for a property: `ci` in `make test`, `soak` under TUNMON_SOAK=1
    (make soak); the environment variable `override_variable` sets it instead, in
    thousandths of `ci`."""
    override = os.environ.get(override_variable)
    if override:
        return max(1, int(override) * ci // 1000)
    return soak if os.environ.get("TUNMON_SOAK") else ci


def run_tunmon(interp, *args, **kwargs):
    """Run tunmon.py with `args` under `interp`; returns CompletedProcess (text, both streams)."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    kwargs.setdefault("timeout", 60)
    return subprocess.run(list(interp) + [TUNMON] + [str(a) for a in args], **kwargs)
