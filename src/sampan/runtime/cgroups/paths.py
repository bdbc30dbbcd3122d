"""cgroupsPath from config.json -> the container's cgroup path inside each hierarchy.

cgroupfs driver (as runc): an absolute path is taken from each hierarchy's root; a relative
one, or the container id when empty, from the caller's own cgroup in that hierarchy.
systemd driver: "slice:prefix:name" -> /<expanded slice>/<prefix>-<name>.scope, from the root.
"""
from __future__ import annotations

DEFAULT_SLICE = "system.slice"
DEFAULT_SCOPE_PREFIX = "sampan"


def container_path(cgroups_path: str | None, container_id: str, *, systemd: bool = False) -> tuple[str, bool]:
    """(path, absolute): the cleaned cgroup path and whether it starts at the hierarchy root
    (else it hangs below the caller's own cgroup). ValueError on paths that escape."""
    if systemd:
        return systemd_path(cgroups_path, container_id), True
    raw = cgroups_path or container_id
    if not raw:
        raise ValueError("cgroupsPath: empty path and empty container id")
    absolute = raw.startswith("/")
    parts = _clean(raw, what=f"cgroupsPath {raw!r}")
    if not parts:
        where = "the hierarchy's root" if absolute else "the caller's own cgroup"
        raise ValueError(f"cgroupsPath {raw!r} names {where}, not a cgroup of its own")
    return "/" + "/".join(parts), absolute


def place(path: str, absolute: bool, own: str, mount_root: str) -> str:
    """The container's path relative to a mount of a hierarchy that shows cgroup `mount_root`,
    given the caller's own cgroup `own` (as /proc/self/cgroup prints it)."""
    if absolute:
        return path
    own_parts = _clean(own, what=f"own cgroup {own!r}")
    root_parts = _clean(mount_root, what=f"mount root {mount_root!r}")
    if own_parts[: len(root_parts)] == root_parts:
        own_parts = own_parts[len(root_parts):]
    return "/" + "/".join([*own_parts, *path.strip("/").split("/")])


def systemd_path(cgroups_path: str | None, container_id: str) -> str:
    if not cgroups_path:
        slice_, prefix, name = DEFAULT_SLICE, DEFAULT_SCOPE_PREFIX, container_id
    else:
        fields = cgroups_path.split(":")
        if len(fields) != 3:
            raise ValueError(f"systemd cgroupsPath must be 'slice:prefix:name', got {cgroups_path!r}")
        slice_, prefix, name = fields
        slice_ = slice_ or DEFAULT_SLICE
    for what, value in (("prefix", prefix), ("name", name)):
        if "/" in value or value in (".", ".."):
            raise ValueError(f"systemd cgroupsPath {cgroups_path!r}: invalid {what} {value!r}")
    if not name:
        raise ValueError(f"systemd cgroupsPath {cgroups_path!r}: empty name")
    if name.endswith(".slice"):
        unit = name
    else:
        unit = f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
    return expand_slice(slice_).rstrip("/") + "/" + unit


def expand_slice(slice_: str) -> str:
    """systemd's slice nesting: "a-b-c.slice" lives at /a.slice/a-b.slice/a-b-c.slice."""
    if not slice_.endswith(".slice") or "/" in slice_:
        raise ValueError(f"invalid systemd slice {slice_!r}: must be a name ending in .slice")
    stem = slice_[: -len(".slice")]
    if stem == "-":
        return "/"
    words = stem.split("-")
    if not all(words):
        raise ValueError(f"invalid systemd slice {slice_!r}: empty component between dashes")
    return "/" + "/".join("-".join(words[: i + 1]) + ".slice" for i in range(len(words)))


def _clean(path: str, *, what: str) -> list[str]:
    """Path components with "." and empty ones dropped and ".." applied; ValueError if ".."
    would climb above the start, or on a NUL byte."""
    if "\0" in path:
        raise ValueError(f"{what} contains a NUL byte")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise ValueError(f"{what} escapes its root with '..'")
            parts.pop()
        else:
            parts.append(part)
    return parts
