"""ctypes binding to the parts of libseccomp.so.2 the OCI runtime uses.

libseccomp reports failure as a negative errno; every wrapper turns that into OSError.
The library is opened on first use, so importing this module costs no dlopen.
"""
from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Sequence

# Filter actions (seccomp.h). ERRNO and TRACE carry 16 bits of data: the errno or the ptrace message.
ACT_KILL_PROCESS = 0x80000000
ACT_KILL_THREAD = 0x00000000
ACT_TRAP = 0x00030000
ACT_ERRNO = 0x00050000
ACT_TRACE = 0x7FF00000
ACT_LOG = 0x7FFC0000
ACT_NOTIFY = 0x7FC00000
ACT_ALLOW = 0x7FFF0000
ACT_DATA_MASK = 0xFFFF

# By their seccomp.h names, which are also the OCI runtime-spec's.
ACTIONS = {
    "SCMP_ACT_KILL": ACT_KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": ACT_KILL_PROCESS,
    "SCMP_ACT_KILL_THREAD": ACT_KILL_THREAD,
    "SCMP_ACT_TRAP": ACT_TRAP,
    "SCMP_ACT_ERRNO": ACT_ERRNO,
    "SCMP_ACT_TRACE": ACT_TRACE,
    "SCMP_ACT_ALLOW": ACT_ALLOW,
    "SCMP_ACT_LOG": ACT_LOG,
    "SCMP_ACT_NOTIFY": ACT_NOTIFY,
}
COMPARISONS = {  # enum scmp_compare
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}

# enum scmp_filter_attr
ATTR_CTL_NNP = 3
ATTR_CTL_OPTIMIZE = 8  # libseccomp >= 2.5: 2 lays the syscall checks out as a binary tree
ATTR_API_SYSRAWRC = 9
# The seccomp(2) filter flags, by their kernel names, and the attribute that makes seccomp_load() pass each.
FLAG_ATTRS = {
    "SECCOMP_FILTER_FLAG_TSYNC": 4,  # SCMP_FLTATR_CTL_TSYNC
    "SECCOMP_FILTER_FLAG_LOG": 6,  # SCMP_FLTATR_CTL_LOG
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 7,  # SCMP_FLTATR_CTL_SSB
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": 10,  # SCMP_FLTATR_CTL_WAITKILL, libseccomp >= 2.6.0
}

# One argument comparison: (argument index, CMP_*, datum_a, datum_b).
Comparison = tuple[int, int, int, int]


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


_lib: ctypes.CDLL | None = None


def _seccomp() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        lib = ctypes.CDLL("libseccomp.so.2")
        ctx, u32, cint = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int
        for name, restype, argtypes in (
            ("seccomp_version", ctypes.POINTER(_Version), []),
            ("seccomp_init", ctx, [u32]),
            ("seccomp_release", None, [ctx]),
            ("seccomp_arch_resolve_name", u32, [ctypes.c_char_p]),
            ("seccomp_arch_add", cint, [ctx, u32]),
            ("seccomp_syscall_resolve_name", cint, [ctypes.c_char_p]),
            ("seccomp_attr_set", cint, [ctx, cint, u32]),
            ("seccomp_rule_add_array", cint, [ctx, u32, cint, ctypes.c_uint, ctypes.POINTER(_ArgCmp)]),
            ("seccomp_load", cint, [ctx]),
            ("seccomp_notify_fd", cint, [ctx]),
            ("seccomp_export_bpf", cint, [ctx, cint]),
        ):
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes
        _lib = lib
    return _lib


def _check(rc: int, what: str) -> int:
    if rc < 0:
        raise OSError(-rc, f"{what}: {os.strerror(-rc)}")
    return rc


def version() -> tuple[int, int, int]:
    v = _seccomp().seccomp_version().contents
    return v.major, v.minor, v.micro


def resolve_syscall(name: str) -> int | None:
    """The native syscall number (negative for libseccomp's pseudo-syscalls), None if unknown."""
    nr = _seccomp().seccomp_syscall_resolve_name(name.encode())
    return None if nr == -1 else nr  # -1 is __NR_SCMP_ERROR


def resolve_arch(name: str) -> int | None:
    """The token for a libseccomp architecture name such as "x86_64", None if unknown."""
    return _seccomp().seccomp_arch_resolve_name(name.encode()) or None


class Filter:
    """An scmp_filter_ctx being built; use as a context manager so the context is released."""

    def __init__(self, default_action: int) -> None:
        self._lib = _seccomp()
        self._ctx = self._lib.seccomp_init(default_action)
        if not self._ctx:
            # seccomp_init only fails on an action the library or kernel does not know.
            raise OSError(errno.EINVAL, f"seccomp_init: invalid default action {default_action:#x}")

    def __enter__(self) -> Filter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._lib.seccomp_release(self._ctx)
        self._ctx = None

    def add_arch(self, token: int) -> None:
        rc = self._lib.seccomp_arch_add(self._ctx, token)
        if rc != -errno.EEXIST:  # the native architecture is always present
            _check(rc, "seccomp_arch_add")

    def set_attr(self, attr: int, value: int) -> None:
        _check(self._lib.seccomp_attr_set(self._ctx, attr, value), f"seccomp_attr_set({attr})")

    def add_rule(self, action: int, syscall: int, comparisons: Sequence[Comparison] = ()) -> None:
        """Add one rule; libseccomp ANDs its comparisons and refuses two on the same argument."""
        array = (_ArgCmp * len(comparisons))(*(_ArgCmp(*c) for c in comparisons))
        rc = self._lib.seccomp_rule_add_array(self._ctx, action, syscall, len(comparisons), array)
        _check(rc, f"seccomp_rule_add({syscall})")

    def load(self) -> None:
        _check(self._lib.seccomp_load(self._ctx), "seccomp_load")

    def export_bpf(self) -> bytes:
        """The filter as the kernel will run it (an array of struct sock_filter), for load_bpf().

        Exactly what seccomp_load() would install when no filter flag is set: building it is
        most of the cost of a load (milliseconds for Docker's profile), installing it is not."""
        fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
        try:
            _check(self._lib.seccomp_export_bpf(self._ctx, fd), "seccomp_export_bpf")
            size = os.fstat(fd).st_size
            return os.pread(fd, size, 0)
        finally:
            os.close(fd)

    def notify_fd(self) -> int:
        """The user-notification listener created by load(); libseccomp keeps it, no syscall is made."""
        return _check(self._lib.seccomp_notify_fd(self._ctx), "seccomp_notify_fd")


PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2


_libc: ctypes.CDLL | None = None


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def load_bpf(program: bytes) -> None:
    """Install a filter made by Filter.export_bpf() in the calling thread, without flags (what
    seccomp_load() does for a filter with no flag attribute set and no notify rule)."""
    if not program or len(program) % 8 or len(program) // 8 > 0xFFFF:
        raise OSError(errno.EINVAL, f"seccomp: invalid BPF program of {len(program)} bytes")
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.prctl(PR_SET_SECCOMP, ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.byref(prog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_SECCOMP): {os.strerror(err)}")
