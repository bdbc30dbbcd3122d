"""The container process's identity and limits: rlimits, user, capabilities, env, executable.

Runs in the child right before execve; returns warnings instead of printing them, since the
child's stderr belongs to the container.
"""
from __future__ import annotations

import errno
import os
import resource

from ..linux import caps as c
from ..linux import process as p

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

RLIMITS = {name: getattr(resource, name) for name in dir(resource) if name.startswith("RLIMIT_")}


def validate(process: dict[str, Any]) -> list[str]:
    """Checks made in the parent so bad input fails before anything is created; returns warnings.

    Capabilities this kernel does not know are skipped, as runc does, so that a config
    written for a newer kernel still runs."""
    for rl in process.get("rlimits") or []:
        if rl["type"] not in RLIMITS:
            raise ValueError(f"rlimit {rl['type']!r} is not supported")
    refuse_lsm_label("process.apparmorProfile", process.get("apparmorProfile"), "AppArmor")
    refuse_lsm_label("process.selinuxLabel", process.get("selinuxLabel"), "SELinux")
    unknown = sorted({name for names in (process.get("capabilities") or {}).values() for name in names or []
                      if _number(name) is None})
    return [f"ignoring unknown or unavailable capabilities: {unknown}"] if unknown else []


def refuse_lsm_label(field: str, value: object, module: str) -> None:
    """A profile or label the config asks for must confine the process, or the container
    must not run: ignoring it would run unconfined what the user asked to confine.

    This runtime applies no AppArmor profile and no SELinux label (features says so), so
    every non-empty one is refused; the message tells a host without the module from one
    with it (where the fix is another runtime, not a config without the field)."""
    if not value:
        return
    from ..linux import lsm
    enabled = lsm.apparmor_enabled() if module == "AppArmor" else lsm.selinux_enabled()
    why = "sampan-runc cannot apply it" if enabled else f"{module} is not enabled on this host"
    raise ValueError(f"{field} {value!r}: {why}; refusing to run the process unconfined")


def _number(name: str) -> int | None:
    try:
        number = c.number(name)
    except ValueError:
        return None
    return number if number <= c.last_cap() else None


def set_rlimits(rlimits: list[dict[str, Any]]) -> list[str]:
    warnings = []
    for rl in rlimits:
        kind = RLIMITS[rl["type"]]
        soft, hard = int(rl.get("soft", 0)), int(rl.get("hard", 0))
        try:
            resource.setrlimit(kind, (soft, hard))
        except (ValueError, PermissionError):
            # Raising a hard limit needs CAP_SYS_RESOURCE; some hosts withhold it. Clamp and say so.
            cur_hard = resource.getrlimit(kind)[1]
            new_hard = min(hard, cur_hard) if cur_hard != resource.RLIM_INFINITY else hard
            new_soft = min(soft, new_hard) if new_hard != resource.RLIM_INFINITY else soft
            resource.setrlimit(kind, (new_soft, new_hard))
            warnings.append(f"{rl['type']} hard limit {hard} exceeds the host's {cur_hard} and "
                            f"CAP_SYS_RESOURCE is unavailable: using soft {new_soft}, hard {new_hard}")
    return warnings


def _mask(names: list[str] | None) -> int:
    bits = 0
    for name in names or []:
        number = _number(name)
        if number is not None:
            bits |= 1 << number
    return bits


def drop_bounding(capabilities: dict[str, Any] | None) -> None:
    if capabilities is None:
        return
    keep = _mask(capabilities.get("bounding"))
    for cap in range(c.last_cap() + 1):
        if not keep & (1 << cap) and c.bounding_has(cap):
            c.bounding_drop(cap)


def set_user(user: dict[str, Any], userns: bool) -> None:
    uid, gid = int(user.get("uid", 0)), int(user.get("gid", 0))
    groups = [int(g) for g in user.get("additionalGids") or []]
    if not userns or _setgroups_allowed():
        os.setgroups(groups)
    elif groups:
        raise OSError(errno.EPERM, "cannot set additional gids: setgroups is denied in this user namespace")
    p.set_keepcaps(True)
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    p.set_keepcaps(False)
    if "umask" in user and user["umask"] is not None:
        os.umask(int(user["umask"]))
    else:
        os.umask(0o022)


def _setgroups_allowed() -> bool:
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() == "allow"
    except OSError:
        return True


CAP_SYS_ADMIN_MASK = 1 << c.NUMBERS["CAP_SYS_ADMIN"]


def set_capabilities(capabilities: dict[str, Any] | None, keep: int = 0) -> None:
    """The config's capability sets; `keep` (a mask) stays in the effective and permitted sets
    besides, where the process has it, for the runtime's own last step before execve
    (loading a seccomp filter without no_new_privs needs CAP_SYS_ADMIN).

    What `keep` adds ends at execve: the kernel computes the new permitted set from the
    bounding, inheritable and ambient sets and the file's capabilities, and the effective
    set from the new permitted or ambient one; the old permitted set only bounds the result,
    under no_new_privs (not the case when `keep` is needed) or a tracer without privileges
    (none can attach: the init is not dumpable). `keep` enters neither inheritable nor
    ambient, and drop_bounding has taken it out of the bounding set unless the config keeps
    it there, so the process after execve has exactly the config's capabilities."""
    if keep:
        effective, permitted, inheritable = c.capget()
        keep &= permitted
    if capabilities is None:
        if keep:
            c.capset(effective | keep, permitted, inheritable)
        return
    c.capset(_mask(capabilities.get("effective")) | keep, _mask(capabilities.get("permitted")) | keep,
             _mask(capabilities.get("inheritable")))
    c.ambient_clear()
    for name in capabilities.get("ambient") or []:
        number = _number(name)
        if number is None:
            continue
        try:
            c.ambient_raise(number)
        except OSError:
            pass  # as runc: an ambient cap not in permitted+inheritable is skipped


def environment(process: dict[str, Any], home: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in process.get("env") or []:
        key, _, value = entry.partition("=")
        env[key] = value
    env.setdefault("HOME", home)
    return env


def home_of(uid: int) -> str:
    try:
        with open("/etc/passwd") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 6 and fields[2] == str(uid):
                    return fields[5] or "/"
    except OSError:
        pass
    return "/"


def find_executable(name: str, env: dict[str, str]) -> str:
    """Resolve args[0] like exec(3)'s PATH search, with Go's messages (callers parse them)."""
    if "/" in name:
        if not os.path.exists(name):
            raise FileNotFoundError(errno.ENOENT, f'exec: "{name}": stat {name}: no such file or directory')
        return name
    for directory in env.get("PATH", "").split(":"):
        candidate = os.path.join(directory or ".", name)
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if not os.path.isdir(candidate) and st.st_mode & 0o111:
            return candidate
    raise FileNotFoundError(errno.ENOENT, f'exec: "{name}": executable file not found in $PATH')
