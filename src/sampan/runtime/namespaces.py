"""Namespace plans: which to create, which to join by path, and joining them in a safe order."""
from __future__ import annotations

import os

from ..linux import namespaces as ns

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def plan(spec: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(n["type"], n.get("path") or None) for n in (spec.get("linux") or {}).get("namespaces") or []]


def new_kinds(entries: list[tuple[str, str | None]]) -> set[str]:
    return {kind for kind, path in entries if not path}


def join(paths: list[tuple[str, str]]) -> None:
    """setns into each (kind, path): user first (it grants the rights for the rest), mount last
    (joining it changes root, so every other path is opened before)."""
    order = sorted(paths, key=lambda kp: 0 if kp[0] == "user" else 2 if kp[0] == "mount" else 1)
    fds = []
    try:
        for kind, path in order:
            try:
                fds.append((kind, path, os.open(path, os.O_RDONLY | os.O_CLOEXEC)))
            except OSError as e:
                raise OSError(e.errno, f"open {kind} namespace {path}: {e.strerror}") from None
        for kind, path, fd in fds:
            if kind == "user" and _same_ns(fd, "/proc/self/ns/user"):
                continue  # setns into one's own user namespace is EINVAL
            ns.setns(fd, ns.KINDS[kind][0], f"join {kind} namespace {path}")
    finally:
        for _, _, fd in fds:
            os.close(fd)


def _same_ns(fd: int, path: str) -> bool:
    a, b = os.fstat(fd), os.stat(path)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def unshare_flags(kinds: set[str]) -> int:
    """Flags for the unshare after the user namespace's (which grants the rights for the rest).
    The cgroup namespace is among them: the process is in its cgroups already (init.py), and
    that is the root the new namespace takes."""
    flags = 0
    for kind in kinds:
        if kind != "user":
            flags |= ns.KINDS[kind][0]
    return flags


def write_id_maps(pid: int, linux: dict[str, Any]) -> None:
    for key, name in (("uidMappings", "uid_map"), ("gidMappings", "gid_map")):
        lines = "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in linux.get(key) or [])
        if not lines:
            continue
        try:
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(lines)
        except OSError as e:
            raise OSError(e.errno, f"write {name} {lines.strip()!r}: {e.strerror}") from None


def write_time_offsets(offsets: dict[str, Any]) -> None:
    lines = "".join(f"{clock} {v.get('secs', 0)} {v.get('nanosecs', 0)}\n" for clock, v in offsets.items())
    with open("/proc/self/timens_offsets", "w") as f:
        f.write(lines)
