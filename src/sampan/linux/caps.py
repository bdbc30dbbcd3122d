"""Capabilities: names, capget/capset (v3), bounding and ambient sets."""
from __future__ import annotations

from .ffi import Structure, byref, c_int, c_uint32
from .libc import check, libc

NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
NUMBERS = {name: i for i, name in enumerate(NAMES)}

PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


_last_cap: int | None = None


def last_cap() -> int:
    """The kernel's highest capability number (read once: a container start asks for every
    capability it sets, and forks of a process that asked already know it)."""
    global _last_cap
    if _last_cap is None:
        try:
            with open("/proc/sys/kernel/cap_last_cap") as f:
                _last_cap = int(f.read())
        except OSError:
            return len(NAMES) - 1
    return _last_cap


def number(name: str) -> int:
    """The number of a capability name; accepts it with or without the CAP_ prefix, any case."""
    key = name.upper()
    if not key.startswith("CAP_"):
        key = "CAP_" + key
    try:
        return NUMBERS[key]
    except KeyError:
        raise ValueError(f"unknown capability {name!r}") from None


class _Header(Structure):
    _fields_ = [("version", c_uint32), ("pid", c_int)]


class _Data(Structure):
    _fields_ = [("effective", c_uint32), ("permitted", c_uint32), ("inheritable", c_uint32)]


def _split(mask: int) -> tuple[int, int]:
    return mask & 0xFFFFFFFF, mask >> 32


def capset(effective: int, permitted: int, inheritable: int) -> None:
    header = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    for i in (0, 1):
        data[i].effective = _split(effective)[i]
        data[i].permitted = _split(permitted)[i]
        data[i].inheritable = _split(inheritable)[i]
    check(libc.capset(byref(header), data), "capset")


def capget(pid: int = 0) -> tuple[int, int, int]:
    header = _Header(_LINUX_CAPABILITY_VERSION_3, pid)
    data = (_Data * 2)()
    check(libc.capget(byref(header), data), "capget")
    join = lambda f: getattr(data[0], f) | (getattr(data[1], f) << 32)  # noqa: E731
    return join("effective"), join("permitted"), join("inheritable")


def bounding_has(cap: int) -> bool:
    return libc.prctl(PR_CAPBSET_READ, cap, 0, 0, 0) == 1


def bounding_drop(cap: int) -> None:
    check(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"drop {NAMES[cap] if cap < len(NAMES) else cap} from bounding set")


def ambient_clear() -> None:
    check(libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient capabilities")


def ambient_raise(cap: int) -> None:
    check(libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0), f"raise ambient {NAMES[cap] if cap < len(NAMES) else cap}")
