"""Which cgroup layout the host uses, where each hierarchy is mounted, and where we sit in it."""
from __future__ import annotations

import os

from ...linux.mount import unescape_mountinfo

DEFAULT_ROOT = "/sys/fs/cgroup"
# Key of the cgroup2 hierarchy in path maps, as in /proc/self/cgroup's "0::/..." line.
UNIFIED = ""


def detect_mode(root: str = DEFAULT_ROOT) -> str:
    """"v2" if `root` is a cgroup2 mount, "hybrid" if cgroup2 sits at `root`/unified beside v1
    hierarchies, else "v1". Only cgroup2 directories hold cgroup.controllers."""
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        return "v2"
    if os.path.exists(os.path.join(root, "unified", "cgroup.controllers")):
        return "hybrid"
    return "v1"


def unified_mountpoint(root: str, mode: str) -> str:
    return root if mode == "v2" else os.path.join(root, "unified")


class Mount:
    """One mounted hierarchy: its mountpoint and which cgroup of the hierarchy it shows there."""

    __slots__ = ("mountpoint", "mount_root")

    def __init__(self, mountpoint: str, mount_root: str) -> None:
        self.mountpoint = mountpoint
        self.mount_root = mount_root

    def __repr__(self) -> str:
        return f"Mount({self.mountpoint!r}, {self.mount_root!r})"


def v1_mounts(root: str = DEFAULT_ROOT) -> dict[str, Mount]:
    """controller (or "name=X" for a named hierarchy) -> its v1 mount under `root`."""
    known = _kernel_controllers()
    found: dict[str, Mount] = {}
    for fstype, mount_root, mountpoint, options in _cgroup_mounts(root):
        if fstype != "cgroup":
            continue
        for opt in options:
            if opt in known or opt.startswith("name="):
                found.setdefault(opt, Mount(mountpoint, mount_root))
    return found


def v2_mount(mountpoint: str) -> Mount:
    """The cgroup2 mount at `mountpoint`; a tree we cannot find in mountinfo (a test's fake
    tree) is taken to show the hierarchy's root."""
    for fstype, mount_root, mnt, _options in _cgroup_mounts(mountpoint):
        if fstype == "cgroup2" and mnt == mountpoint:
            return Mount(mnt, mount_root)
    return Mount(mountpoint, "/")


def own_cgroups(pid: int | str = "self") -> dict[str, str]:
    """controller (UNIFIED for cgroup2) -> the cgroup path of `pid` in that hierarchy."""
    out: dict[str, str] = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _id, controllers, path = line.rstrip("\n").split(":", 2)
            if not controllers:
                out[UNIFIED] = path
            for c in controllers.split(","):
                if c:
                    out[c] = path
    return out


def _kernel_controllers() -> set[str]:
    with open("/proc/cgroups") as f:
        return {line.split()[0] for line in f if line.strip() and not line.startswith("#")}


def _cgroup_mounts(under: str) -> list[tuple[str, str, str, list[str]]]:
    """(fstype, mount root, mountpoint, super options) of cgroup mounts at or below `under`."""
    under = under.rstrip("/") or "/"
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
                continue
            mountpoint = unescape_mountinfo(fields[4])
            if mountpoint == under or mountpoint.startswith(under.rstrip("/") + "/"):
                out.append((tail[0], unescape_mountinfo(fields[3]), mountpoint, tail[2].split(",")))
    return out

