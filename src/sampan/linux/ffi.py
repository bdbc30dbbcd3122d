"""Calling libc through the ctypes engine (_ctypes) without the ctypes package.

The ctypes package spends ~2.5 ms at import building types this code never uses, on a path
that runs once per container start. What sampan's syscall wrappers need is small: C integer
and string types, structures, byref, errno and functions looked up by name.
"""
from __future__ import annotations

import _ctypes
from _ctypes import Structure, byref, get_errno, sizeof  # noqa: F401 - re-exported for linux/

# Type codes as in the struct module; long is 64-bit on the Linux ABIs we run on.
class c_int(_ctypes._SimpleCData):
    _type_ = "i"


class c_uint(_ctypes._SimpleCData):
    _type_ = "I"


class c_long(_ctypes._SimpleCData):
    _type_ = "l"


class c_ulong(_ctypes._SimpleCData):
    _type_ = "L"


class c_uint64(_ctypes._SimpleCData):
    _type_ = "Q"


class c_char_p(_ctypes._SimpleCData):
    _type_ = "z"


c_uint32 = c_uint


class _Function(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = c_int


class _GILFunction(_ctypes.CFuncPtr):
    """Called with the GIL held (ctypes' PyDLL): for the interpreter's own C API, and for a
    call that must not let another Python thread run meanwhile."""
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_PYTHONAPI | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = c_long


class Library:
    """A loaded library; attributes are its C functions (int result, errno kept). With
    hold_gil, its functions run with the GIL held and return a C long."""

    def __init__(self, name: str | None = None, hold_gil: bool = False) -> None:
        self._handle = _ctypes.dlopen(name, _ctypes.RTLD_LOCAL)
        self._function_type = _GILFunction if hold_gil else _Function

    def __getattr__(self, name: str) -> _Function:
        if name.startswith("__"):
            raise AttributeError(name)
        function = self._function_type((name, self))
        setattr(self, name, function)
        return function
