"""Per-process kernel knobs: prctl flags, host and domain names, fd ranges."""
from __future__ import annotations

from .ffi import c_uint, c_ulong
from .libc import check, libc

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36

SYS_close_range = 436
CLOSE_RANGE_CLOEXEC = 1 << 2


def prctl(option: int, arg: int = 0, what: str = "prctl") -> None:
    check(libc.prctl(option, c_ulong(arg), 0, 0, 0), what)


def set_no_new_privs() -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1, "set no_new_privs")


def set_dumpable(on: bool) -> None:
    prctl(PR_SET_DUMPABLE, int(on), "set dumpable")


def set_keepcaps(on: bool) -> None:
    prctl(PR_SET_KEEPCAPS, int(on), "set keepcaps")


def set_child_subreaper() -> None:
    prctl(PR_SET_CHILD_SUBREAPER, 1, "set child subreaper")


def set_pdeathsig(sig: int) -> None:
    prctl(PR_SET_PDEATHSIG, sig, "set parent death signal")


def sethostname(name: str) -> None:
    raw = name.encode()
    check(libc.sethostname(raw, len(raw)), f"sethostname {name!r}")


def setdomainname(name: str) -> None:
    raw = name.encode()
    check(libc.setdomainname(raw, len(raw)), f"setdomainname {name!r}")


def cloexec_from(first: int) -> None:
    """Mark every fd >= first close-on-exec, so nothing of the runtime's leaks past execve."""
    if libc.syscall(SYS_close_range, c_uint(first), c_uint(0xFFFFFFFF), CLOSE_RANGE_CLOEXEC) == 0:
        return
    import os
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd >= first:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass
