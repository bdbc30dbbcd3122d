"""Choosing and building the manager: from a cgroupsPath on this host, or from saved state."""
from __future__ import annotations

import os

from . import hierarchy, paths
from .base import Manager
from .hierarchy import DEFAULT_ROOT, UNIFIED


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

    if mode == "v2":
        from .v2 import V2Manager

        return V2Manager(root, place(UNIFIED, hierarchy.v2_mount(root)))
    v1_paths = {key: place(key, mount) for key, mount in hierarchy.v1_mounts(root).items()}
    from .v1 import V1Manager

    if mode == "v1":
        return V1Manager(root, v1_paths)
    from .hybrid import HybridManager
    from .v2 import V2Manager

    mountpoint = hierarchy.unified_mountpoint(root, mode)
    unified = V2Manager(root, place(UNIFIED, hierarchy.v2_mount(mountpoint)), mountpoint=mountpoint, enable_all=False)
    return HybridManager(root, V1Manager(root, v1_paths), unified)


def manager_from_state(state: dict) -> Manager:
    """Rebuild a manager from Manager.to_state()."""
    try:
        mode, root, dirs, created = state["mode"], state["root"], dict(state["paths"]), list(state["created"])
        unified_dir = dirs.pop(UNIFIED) if mode != "v1" else None
    except (KeyError, TypeError) as e:
        raise ValueError(f"cgroup state is incomplete ({e}): {state!r}") from None
    if mode == "v2":
        from .v2 import V2Manager

        return V2Manager(root, unified_dir, created)
    v1_paths = dirs
    from .v1 import V1Manager

    if mode == "v1":
        return V1Manager(root, v1_paths, created)
    if mode == "hybrid":
        from .hybrid import HybridManager
        from .v2 import V2Manager

        mountpoint = hierarchy.unified_mountpoint(root, mode)
        unified = V2Manager(root, unified_dir, mountpoint=mountpoint, enable_all=False)
        return HybridManager(root, V1Manager(root, v1_paths), unified, created)
    raise ValueError(f"cgroup state: unknown mode {mode!r}")
