"""A tiny eBPF assembler: the handful of instructions a device filter needs, and jump labels."""
from __future__ import annotations

import struct
import sys

# Opcode = operation | source | instruction class (linux/bpf_common.h, linux/bpf.h).
_LDX_MEM_W = 0x61  # dst = *(u32 *)(src + off)
_MOV64_K = 0xB7  # dst = imm
_MOV64_X = 0xBF  # dst = src
_AND64_K = 0x57  # dst &= imm
_RSH64_K = 0x77  # dst >>= imm
_JEQ_K = 0x15  # if dst == imm: goto +off
_JNE_K = 0x55  # if dst != imm: goto +off
_EXIT = 0x95

_INSN = struct.Struct("=BBhi")  # struct bpf_insn in native byte order
_IMM_MIN, _IMM_MAX = -(1 << 31), (1 << 31) - 1


class Assembler:
    """Collects instructions; jumps name a label placed later with label()."""

    def __init__(self) -> None:
        # (opcode, dst, src, off, imm, jump target label or None)
        self._insns: list[tuple[int, int, int, int, int, str | None]] = []
        self._labels: dict[str, int] = {}

    def ldx_w(self, dst: int, src: int, off: int) -> None:
        self._emit(_LDX_MEM_W, dst, src, off, 0)

    def mov(self, dst: int, imm: int) -> None:
        self._emit(_MOV64_K, dst, 0, 0, imm)

    def mov_reg(self, dst: int, src: int) -> None:
        self._emit(_MOV64_X, dst, src, 0, 0)

    def and_(self, dst: int, imm: int) -> None:
        self._emit(_AND64_K, dst, 0, 0, imm)

    def rsh(self, dst: int, imm: int) -> None:
        self._emit(_RSH64_K, dst, 0, 0, imm)

    def jeq(self, dst: int, imm: int, label: str) -> None:
        self._emit(_JEQ_K, dst, 0, 0, imm, label)

    def jne(self, dst: int, imm: int, label: str) -> None:
        self._emit(_JNE_K, dst, 0, 0, imm, label)

    def exit(self) -> None:
        self._emit(_EXIT, 0, 0, 0, 0)

    def label(self, name: str) -> None:
        if name in self._labels:
            raise ValueError(f"ebpf: label {name!r} placed twice")
        self._labels[name] = len(self._insns)

    def assemble(self) -> bytes:
        out = bytearray()
        for index, (opcode, dst, src, off, imm, target) in enumerate(self._insns):
            if target is not None:
                if target not in self._labels:
                    raise ValueError(f"ebpf: jump to undefined label {target!r}")
                off = self._labels[target] - (index + 1)
                if not -(1 << 15) <= off < 1 << 15:
                    raise ValueError(f"ebpf: jump to {target!r} is out of range")
            # bpf_insn packs dst_reg:4, src_reg:4 into one byte; bitfields fill from the low
            # end on little-endian machines and from the high end on big-endian ones.
            regs = (src << 4 | dst) if sys.byteorder == "little" else (dst << 4 | src)
            out += _INSN.pack(opcode, regs, off, imm)
        return bytes(out)

    def _emit(self, opcode: int, dst: int, src: int, off: int, imm: int, target: str | None = None) -> None:
        if not (0 <= dst <= 10 and 0 <= src <= 10):
            raise ValueError(f"ebpf: no register r{dst if not 0 <= dst <= 10 else src}")
        if not _IMM_MIN <= imm <= _IMM_MAX:
            raise ValueError(f"ebpf: immediate {imm} does not fit 32 bits")
        self._insns.append((opcode, dst, src, off, imm, target))
