"""config.json mount options -> mount(2) flags, propagation flags and fs data."""
from __future__ import annotations

from ..linux import mount as m

# option -> (clear?, flag)
FLAGS: dict[str, tuple[bool, int]] = {
    "acl": (False, 0), "noacl": (True, 0),
    "async": (True, m.MS_SYNCHRONOUS), "sync": (False, m.MS_SYNCHRONOUS),
    "atime": (True, m.MS_NOATIME), "noatime": (False, m.MS_NOATIME),
    "bind": (False, m.MS_BIND), "rbind": (False, m.MS_BIND | m.MS_REC),
    "defaults": (False, 0),
    "dev": (True, m.MS_NODEV), "nodev": (False, m.MS_NODEV),
    "diratime": (True, m.MS_NODIRATIME), "nodiratime": (False, m.MS_NODIRATIME),
    "dirsync": (False, m.MS_DIRSYNC),
    "exec": (True, m.MS_NOEXEC), "noexec": (False, m.MS_NOEXEC),
    "iversion": (False, 1 << 23), "noiversion": (True, 1 << 23),
    "lazytime": (False, m.MS_LAZYTIME), "nolazytime": (True, m.MS_LAZYTIME),
    "loud": (True, m.MS_SILENT), "silent": (False, m.MS_SILENT),
    "mand": (False, m.MS_MANDLOCK), "nomand": (True, m.MS_MANDLOCK),
    "relatime": (False, m.MS_RELATIME), "norelatime": (True, m.MS_RELATIME),
    "remount": (False, m.MS_REMOUNT),
    "ro": (False, m.MS_RDONLY), "rw": (True, m.MS_RDONLY),
    "strictatime": (False, m.MS_STRICTATIME), "nostrictatime": (True, m.MS_STRICTATIME),
    "suid": (True, m.MS_NOSUID), "nosuid": (False, m.MS_NOSUID),
    "symfollow": (True, m.MS_NOSYMFOLLOW), "nosymfollow": (False, m.MS_NOSYMFOLLOW),
}

PROPAGATION: dict[str, int] = {
    "private": m.MS_PRIVATE, "rprivate": m.MS_PRIVATE | m.MS_REC,
    "shared": m.MS_SHARED, "rshared": m.MS_SHARED | m.MS_REC,
    "slave": m.MS_SLAVE, "rslave": m.MS_SLAVE | m.MS_REC,
    "unbindable": m.MS_UNBINDABLE, "runbindable": m.MS_UNBINDABLE | m.MS_REC,
}

# Options runc accepts but that only matter to other tools (mount(8) helpers, idmapped mounts).
IGNORED = {"auto", "noauto", "user", "nouser", "users", "_netdev", "nofail", "owner", "group", "comment"}


def parse(options: list[str]) -> tuple[int, list[int], str]:
    """Returns (flags, propagation flags in order, data string)."""
    flags = 0
    propagation: list[int] = []
    data: list[str] = []
    for opt in options:
        if opt in FLAGS:
            clear, flag = FLAGS[opt]
            flags = flags & ~flag if clear else flags | flag
        elif opt in PROPAGATION:
            propagation.append(PROPAGATION[opt])
        elif opt in IGNORED or opt.startswith(("x-", "comment=")):
            continue
        else:
            data.append(opt)
    return flags, propagation, ",".join(data)


def root_propagation(value: str) -> int:
    try:
        return PROPAGATION[value]
    except KeyError:
        raise ValueError(f"rootfsPropagation {value!r} is not valid") from None
