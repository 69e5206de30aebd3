"""Stand-in for MicroPython's `uctypes.addressof` on CPython (see ffi.py beside it)."""
import ctypes


def addressof(data):
    # c_char_p of a bytes object points at the object's own buffer: no copy is made.
    return ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value
