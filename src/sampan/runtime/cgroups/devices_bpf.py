"""Device access on cgroup v2: a DeviceState compiled to a BPF_PROG_TYPE_CGROUP_DEVICE program
and attached to the container's cgroup, replacing the one attached before."""
from __future__ import annotations

import os

from sampan.linux import bpf

from .devices import ALL_ACCESS, WILDCARD, DeviceState
from .ebpf import Assembler

# struct bpf_cgroup_dev_ctx { u32 access_type; /* access << 16 | type */ u32 major; u32 minor; }
_CTX_ACCESS_TYPE, _CTX_MAJOR, _CTX_MINOR = 0, 4, 8
_DEV_TYPE = {"b": 1, "c": 2}  # BPF_DEVCG_DEV_BLOCK, BPF_DEVCG_DEV_CHAR

# Registers: r1 holds the context on entry, r0 the verdict (1 allow, 0 deny) on exit.
_R0, _CTX, _TYPE, _ACCESS, _MAJOR, _MINOR, _SCRATCH = 0, 1, 2, 3, 4, 5, 6

_LICENSE = "Apache-2.0"  # only gates GPL-only helpers, which the program does not call
_NAME = "sampan_devices"


def compile_program(state: DeviceState) -> bytes:
    """Exceptions are checked one after another; a match returns the opposite of the default.
    Default deny: an allow exception matches when it grants every bit requested. Default
    allow: a deny exception matches when it forbids any bit requested (the v1 controller's
    match_exception and match_exception_partial)."""
    asm = Assembler()
    asm.ldx_w(_TYPE, _CTX, _CTX_ACCESS_TYPE)
    asm.mov_reg(_ACCESS, _TYPE)
    asm.and_(_TYPE, 0xFFFF)
    asm.rsh(_ACCESS, 16)
    asm.ldx_w(_MAJOR, _CTX, _CTX_MAJOR)
    asm.ldx_w(_MINOR, _CTX, _CTX_MINOR)
    for n, ((type_, major, minor), access) in enumerate(state.exceptions.items()):
        skip = f"next{n}"
        asm.jne(_TYPE, _DEV_TYPE[type_], skip)
        if major != WILDCARD:
            asm.jne(_MAJOR, major, skip)
        if minor != WILDCARD:
            asm.jne(_MINOR, minor, skip)
        if state.default_allow:
            asm.mov_reg(_SCRATCH, _ACCESS)
            asm.and_(_SCRATCH, access)
            asm.jeq(_SCRATCH, 0, skip)
        elif access != ALL_ACCESS:
            asm.mov_reg(_SCRATCH, _ACCESS)
            asm.and_(_SCRATCH, ALL_ACCESS & ~access)
            asm.jne(_SCRATCH, 0, skip)
        asm.mov(_R0, 0 if state.default_allow else 1)
        asm.exit()
        asm.label(skip)
    asm.mov(_R0, 1 if state.default_allow else 0)
    asm.exit()
    return asm.assemble()


def install(cgroup_dir: str, state: DeviceState) -> None:
    """Attach the program for `state` to `cgroup_dir`, then detach what was there before, so
    the cgroup is never without a filter (for a moment both apply: the stricter wins)."""
    prog_fd = bpf.prog_load(bpf.PROG_TYPE_CGROUP_DEVICE, compile_program(state), _LICENSE, _NAME)
    try:
        dir_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            previous = bpf.prog_query(dir_fd, bpf.ATTACH_CGROUP_DEVICE)
            bpf.prog_attach(dir_fd, prog_fd, bpf.ATTACH_CGROUP_DEVICE, bpf.F_ALLOW_MULTI)
            for prog_id in previous:
                _detach(dir_fd, prog_id)
        finally:
            os.close(dir_fd)
    finally:
        os.close(prog_fd)


def _detach(dir_fd: int, prog_id: int) -> None:
    try:
        old_fd = bpf.prog_get_fd_by_id(prog_id)
    except FileNotFoundError:
        return  # already gone
    try:
        bpf.prog_detach(dir_fd, old_fd, bpf.ATTACH_CGROUP_DEVICE)
    except FileNotFoundError:
        pass
    finally:
        os.close(old_fd)
