"""The shared libc handle and the errno-checking call helper."""
from __future__ import annotations

import os

from .ffi import Library, get_errno

libc = Library()


def check(result: int, what: str = "", path: str | None = None) -> int:
    """Turn a -1 libc return into OSError carrying errno and the name of what failed."""
    if result == -1:
        err = get_errno()
        if path is not None:
            raise OSError(err, f"{what}: {os.strerror(err)}", path)
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def fsencode(path: str | bytes | None) -> bytes | None:
    return None if path is None else os.fsencode(path)
