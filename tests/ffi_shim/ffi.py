"""A stand-in for MicroPython's `ffi` module on CPython, built on ctypes.

The test MicroPython has no `ffi`, so tunmon's ffi code path (fork/execv/waitpid and libc
signal handlers, as used on OpenWrt's MicroPython) is exercised on CPython through this
module: put this directory first on PYTHONPATH and set TUNMON_RUNNER=ffi.  It implements only
what tunmon uses: open(lib).func(ret, name, args) and callback(ret, fn, args, lock=...).
Type letters follow MicroPython's: i int, v void, s str, P/p pointer, C callback.
"""
import array
import ctypes

_TYPES = {"i": ctypes.c_int, "v": None, "s": ctypes.c_char_p, "P": ctypes.c_void_p,
          "p": ctypes.c_void_p, "C": ctypes.c_void_p}


def _convert(letter, value):
    if letter == "s" and isinstance(value, str):
        return value.encode()
    if letter in "Pp" and isinstance(value, array.array):
        return value.buffer_info()[0]
    if letter == "C" and isinstance(value, _Callback):
        return ctypes.cast(value.c_function, ctypes.c_void_p).value
    return value


class _Func:
    def __init__(self, c_function, args):
        self.c_function = c_function
        self.args = args

    def __call__(self, *values):
        return self.c_function(*[_convert(letter, value)
                                 for letter, value in zip(self.args, values)])


class _Lib:
    def __init__(self, name):
        self.cdll = ctypes.CDLL(name, use_errno=True)

    def func(self, ret, name, args):
        c_function = getattr(self.cdll, name)
        c_function.restype = _TYPES[ret]
        c_function.argtypes = [_TYPES[letter] for letter in args]
        return _Func(c_function, args)


class _Callback:
    def __init__(self, ret, function, args):
        prototype = ctypes.CFUNCTYPE(_TYPES[ret], *[_TYPES[letter] for letter in args])
        self.c_function = prototype(function)


def open(name):  # noqa: A001 - the ffi module's own name for it
    try:
        return _Lib(name)
    except OSError as err:
        raise OSError(2, str(err))


def callback(ret, function, args, lock=False):
    return _Callback(ret, function, args)
