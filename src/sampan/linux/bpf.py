"""bpf(2): load a program, attach it to and detach it from a cgroup, list what is attached."""
from __future__ import annotations

import ctypes
import errno
import os

from sampan.linux.libc import check

_SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "loongarch64": 280, "ppc64le": 361, "s390x": 351}
_NR_BPF = _SYS_BPF.get(os.uname().machine)

# Commands (enum bpf_cmd).
_PROG_LOAD = 5
_PROG_ATTACH = 8
_PROG_DETACH = 9
_PROG_GET_FD_BY_ID = 13
_PROG_QUERY = 16

PROG_TYPE_CGROUP_DEVICE = 15  # enum bpf_prog_type
ATTACH_CGROUP_DEVICE = 6  # enum bpf_attach_type
F_ALLOW_MULTI = 2  # attach beside other programs instead of replacing them

_LOG_SIZE = 1 << 16

# A private function pointer, so setting its restype cannot disturb other users of libc.syscall.
_syscall = ctypes.CDLL(None, use_errno=True)["syscall"]
_syscall.restype = ctypes.c_long

_u32, _u64 = ctypes.c_uint32, ctypes.c_uint64


class _ProgLoadAttr(ctypes.Structure):
    _fields_ = [
        ("prog_type", _u32),
        ("insn_cnt", _u32),
        ("insns", _u64),
        ("license", _u64),
        ("log_level", _u32),
        ("log_size", _u32),
        ("log_buf", _u64),
        ("kern_version", _u32),
        ("prog_flags", _u32),
        ("prog_name", ctypes.c_char * 16),
        ("prog_ifindex", _u32),
        ("expected_attach_type", _u32),
    ]


class _AttachAttr(ctypes.Structure):
    _fields_ = [
        ("target_fd", _u32),
        ("attach_bpf_fd", _u32),
        ("attach_type", _u32),
        ("attach_flags", _u32),
        ("replace_bpf_fd", _u32),
    ]


class _QueryAttr(ctypes.Structure):
    _fields_ = [
        ("target_fd", _u32),
        ("attach_type", _u32),
        ("query_flags", _u32),
        ("attach_flags", _u32),
        ("prog_ids", _u64),
        ("prog_cnt", _u32),
    ]


class _GetFdByIdAttr(ctypes.Structure):
    _fields_ = [("prog_id", _u32), ("next_id", _u32), ("open_flags", _u32)]


def _bpf(cmd: int, attr: ctypes.Structure, what: str) -> int:
    if _NR_BPF is None:
        raise OSError(errno.ENOSYS, f"{what}: bpf(2) syscall number unknown for {os.uname().machine}")
    size = ctypes.sizeof(attr)
    return check(_syscall(ctypes.c_long(_NR_BPF), ctypes.c_long(cmd), ctypes.byref(attr), ctypes.c_long(size)), what)


def prog_load(prog_type: int, insns: bytes, license: str, name: str = "") -> int:
    """Load a program and return its fd. On rejection the verifier's log joins the error."""
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())
    attr = _ProgLoadAttr(
        prog_type=prog_type,
        insn_cnt=len(insns) // 8,
        insns=ctypes.addressof(code),
        license=ctypes.addressof(lic),
        prog_name=name.encode()[:15],
    )
    try:
        return _bpf(_PROG_LOAD, attr, "bpf(BPF_PROG_LOAD)")
    except OSError as first:
        log = ctypes.create_string_buffer(_LOG_SIZE)
        attr.log_level, attr.log_size, attr.log_buf = 1, _LOG_SIZE, ctypes.addressof(log)
        try:
            return _bpf(_PROG_LOAD, attr, "bpf(BPF_PROG_LOAD)")
        except OSError as e:
            verifier = log.value.decode(errors="replace").strip()
            raise OSError(e.errno, f"{e.strerror}; verifier log:\n{verifier}" if verifier else e.strerror) from first


def prog_attach(target_fd: int, prog_fd: int, attach_type: int, flags: int = 0) -> None:
    attr = _AttachAttr(target_fd=target_fd, attach_bpf_fd=prog_fd, attach_type=attach_type, attach_flags=flags)
    _bpf(_PROG_ATTACH, attr, "bpf(BPF_PROG_ATTACH)")


def prog_detach(target_fd: int, prog_fd: int, attach_type: int) -> None:
    attr = _AttachAttr(target_fd=target_fd, attach_bpf_fd=prog_fd, attach_type=attach_type)
    _bpf(_PROG_DETACH, attr, "bpf(BPF_PROG_DETACH)")


def prog_query(target_fd: int, attach_type: int) -> list[int]:
    """Ids of the programs attached directly to the target (not inherited ones)."""
    attr = _QueryAttr(target_fd=target_fd, attach_type=attach_type)
    _bpf(_PROG_QUERY, attr, "bpf(BPF_PROG_QUERY)")  # with no buffer: just the count
    while attr.prog_cnt:
        ids = (_u32 * attr.prog_cnt)()
        attr.prog_ids = ctypes.addressof(ids)
        try:
            _bpf(_PROG_QUERY, attr, "bpf(BPF_PROG_QUERY)")
        except OSError as e:
            if e.errno == errno.ENOSPC:  # more got attached meanwhile; prog_cnt holds the new count
                continue
            raise
        return list(ids[: attr.prog_cnt])
    return []


def prog_get_fd_by_id(prog_id: int) -> int:
    return _bpf(_PROG_GET_FD_BY_ID, _GetFdByIdAttr(prog_id=prog_id), "bpf(BPF_PROG_GET_FD_BY_ID)")
