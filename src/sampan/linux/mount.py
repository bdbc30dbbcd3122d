"""mount(2), umount2(2) and pivot_root(2)."""
from __future__ import annotations

from .ffi import c_char_p, c_ulong
from .libc import check, fsencode, libc

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_UNBINDABLE = 0x20000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000
MS_LAZYTIME = 0x2000000

MNT_FORCE = 1
MNT_DETACH = 2

SYS_pivot_root = 155  # x86_64

libc.mount.argtypes = [c_char_p, c_char_p, c_char_p, c_ulong, c_char_p]


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    rc = libc.mount(fsencode(source), fsencode(target), fsencode(fstype), flags, fsencode(data))
    check(rc, f"mount {source or fstype} on {target}")


def umount(target: str, flags: int = 0) -> None:
    check(libc.umount2(fsencode(target), flags), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    check(libc.syscall(SYS_pivot_root, fsencode(new_root), fsencode(put_old)), f"pivot_root {new_root}")


def unescape_mountinfo(field: str) -> str:
    """A path field of /proc/*/mountinfo as the path: the kernel writes space, tab, newline and
    backslash in them as octal escapes (\\040 ...)."""
    if "\\" not in field:
        return field
    import codecs
    return codecs.escape_decode(field.encode())[0].decode()  # type: ignore[attr-defined]
