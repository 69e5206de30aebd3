"""Test spy around the lead's ctypes `ffi` stand-in (tests/ffi_shim/ffi.py).

test_daemon.py puts this directory first on PYTHONPATH (then tests/ffi_shim) so that tunmon's
`import ffi` gets this module; it forwards everything to the stand-in and appends the name of
every libc function tunmon binds to the file named by $TUNMON_TEST_FFI_LOG. That proves the
ffi code path really ran (TUNMON_RUNNER=ffi was honoured) instead of the native runner.
"""
import builtins
import importlib.util
import os

_SHIM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "ffi_shim", "ffi.py")
_spec = importlib.util.spec_from_file_location("_tunmon_ffi_shim", _SHIM)
_shim = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_shim)


def _note(name):
    path = os.environ.get("TUNMON_TEST_FFI_LOG")
    if path:
        with builtins.open(path, "a") as f:
            f.write("%s\n" % (name,))


class _LibSpy:
    def __init__(self, lib):
        self._lib = lib

    def func(self, ret, name, args, *rest, **kw):
        _note(name)
        return self._lib.func(ret, name, args, *rest, **kw)

    def __getattr__(self, name):
        return getattr(self._lib, name)


def open(*args, **kw):  # noqa: A001 - same name as MicroPython's ffi.open
    _note("open:%s" % (args[0] if args else ""))
    return _LibSpy(_shim.open(*args, **kw))


def __getattr__(name):
    return getattr(_shim, name)
