"""Choosing and building the manager: from a cgroupsPath on this host, or from saved state."""
from __future__ import annotations

import os

from . import hierarchy, paths
from .base import Manager
from .hierarchy import DEFAULT_ROOT, UNIFIED

_MODES = ("v1", "v2", "hybrid")


def manager_for(
    cgroups_path: str | None, container_id: str, *, root: str = DEFAULT_ROOT, systemd: bool = False
) -> Manager:
    """The manager for a container's linux.cgroupsPath on this host (see paths for the
    rules). Nothing is created until Manager.create()."""
    path, absolute = paths.container_path(cgroups_path, container_id, systemd=systemd)
    mode = hierarchy.detect_mode(root)
    own = {} if absolute else hierarchy.own_cgroups()

    def place(key: str, mount: hierarchy.Mount) -> str:
        inner = paths.place(path, absolute, own.get(key, "/"), mount.mount_root)
        return os.path.join(mount.mountpoint, inner.lstrip("/"))

    v1_paths: dict[str, str] = {}
    unified_dir = None
    if mode != "v2":
        v1_paths = {key: place(key, mount) for key, mount in hierarchy.v1_mounts(root).items()}
    if mode != "v1":
        unified_dir = place(UNIFIED, hierarchy.v2_mount(hierarchy.unified_mountpoint(root, mode)))
    return _build(mode, root, v1_paths, unified_dir, [])


def manager_from_state(state: dict) -> Manager:
    """Rebuild a manager from Manager.to_state()."""
    try:
        mode, root, dirs, created = state["mode"], state["root"], dict(state["paths"]), list(state["created"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"cgroup state is incomplete ({e}): {state!r}") from None
    if mode not in _MODES:
        raise ValueError(f"cgroup state: unknown mode {mode!r}")
    unified_dir = dirs.pop(UNIFIED, None)
    if (unified_dir is None) != (mode == "v1"):
        raise ValueError(f"cgroup state: paths {state['paths']!r} do not fit mode {mode!r}")
    return _build(mode, root, dirs, unified_dir, created)


def _build(mode: str, root: str, v1_paths: dict[str, str], unified_dir: str | None, created: list[str]) -> Manager:
    # Managers are imported here so a container start loads only its own mode's modules.
    if mode == "v2":
        from .v2 import V2Manager

        assert unified_dir is not None
        return V2Manager(root, unified_dir, created)
    from .v1 import V1Manager

    if mode == "v1":
        return V1Manager(root, v1_paths, created)
    from .hybrid import HybridManager
    from .v2 import V2Manager

    assert unified_dir is not None
    # The unified tree mirrors the container's place; set() enables there only the
    # controllers it needs and v1 lacks (hugetlb on this kind of host).
    mountpoint = hierarchy.unified_mountpoint(root, mode)
    unified = V2Manager(root, unified_dir, mountpoint=mountpoint, enable_all=False)
    return HybridManager(root, V1Manager(root, v1_paths), unified, created)
