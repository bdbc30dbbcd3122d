"""fork() through clone3(2), for what os.fork() cannot ask for: a child that starts in a
cgroup v2 directory (CLONE_INTO_CGROUP) and in new namespaces.

Moving a running process into a cgroup2 directory (a write to cgroup.procs) takes the
kernel's global cgroup_threadgroup_rwsem for writing, and the first writer after a quiet
while waits an RCU grace period for it: 5-15 ms here, a third of a container start. A child
cloned into its cgroup is never moved, and nothing waits.

os.fork() is CPython's before/after-fork protocol around glibc's fork(); fork_into makes the
same PyOS_* calls around a raw clone3 instead, all with the GIL held as os.fork holds it.
glibc's fork() additionally takes malloc's and stdio's locks when the process has several
threads, so that the child never finds one held by a thread it did not inherit; a raw clone3
cannot, so fork_into only runs in a single-threaded process (where glibc takes none either).
The one other difference, glibc's cached thread id of the child, serves only thread-owned
mutex checks and is never read by what runs in the child before it execs or exits.
"""
from __future__ import annotations

import errno
import os

from .ffi import Library, Structure, byref, c_long, c_uint64, get_errno, sizeof

SYS_clone3 = 435  # x86_64 and every architecture with the unified syscall table
CLONE_INTO_CGROUP = 0x200000000
SIGCHLD = 17

# Errors that mean clone3 or CLONE_INTO_CGROUP is not to be had here (an older kernel, a
# seccomp filter such as a container engine's default profile); os.fork() is the way then.
_UNAVAILABLE = (errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.E2BIG)


class _CloneArgs(Structure):
    _fields_ = [(name, c_uint64) for name in ("flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack",
                                               "stack_size", "tls", "set_tid", "set_tid_size", "cgroup")]


_process = Library(None, hold_gil=True)  # the interpreter binary and the libc it links


def single_threaded() -> bool:
    return len(os.listdir("/proc/self/task")) == 1


def _usable() -> bool:
    """One thread, and the interpreter's fork protocol within reach (its C API symbols are
    exported by the python binary or the libpython it links)."""
    if not single_threaded():
        return False
    try:
        for name in ("PyOS_BeforeFork", "PyOS_AfterFork_Parent", "PyOS_AfterFork_Child", "syscall"):
            getattr(_process, name)
    except AttributeError:
        return False
    return True


def fork_into(cgroup_dir_fd: int | None, flags: int = 0) -> int | None:
    """Fork as os.fork() does, the child starting in the cgroup2 directory open as
    `cgroup_dir_fd` (None: the caller's) and in the new namespaces of `flags` (CLONE_NEW*).
    Returns the child's pid in the parent and 0 in the child; None, with nothing forked, where
    clone3 cannot be used (other threads in the process, a kernel or filter without it)."""
    if not _usable():
        return None
    args = _CloneArgs(flags=flags | (CLONE_INTO_CGROUP if cgroup_dir_fd is not None else 0), exit_signal=SIGCHLD,
                      cgroup=cgroup_dir_fd or 0)
    _process.PyOS_BeforeFork()
    pid = _process.syscall(c_long(SYS_clone3), byref(args), c_long(sizeof(args)))
    if pid == 0:
        _process.PyOS_AfterFork_Child()
        return 0
    err = get_errno()
    _process.PyOS_AfterFork_Parent()
    if pid > 0:
        return pid
    if err in _UNAVAILABLE:
        return None
    raise OSError(err, f"clone3: {os.strerror(err)}")
