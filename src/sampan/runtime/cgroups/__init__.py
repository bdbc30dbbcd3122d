"""cgroups for containers: one Manager interface over cgroup v1, v2 and hybrid hosts.

manager_for() picks the manager for this host; manager_from_state() rebuilds one from to_state().
"""
from .base import Manager
from .factory import manager_for, manager_from_state
from .hierarchy import detect_mode


def remove_if_empty(path: str, root: str = "/sys/fs/cgroup") -> None:
    """rmdir the cgroup at absolute `path` in every hierarchy where it holds no child or task
    (an engine's parent cgroup once its last container is gone)."""
    import os

    from .fs import remove_if_unused
    dirs = [os.path.join(root, path.lstrip("/"))]
    dirs += [os.path.join(root, name, path.lstrip("/")) for name in os.listdir(root)
             if os.path.isdir(os.path.join(root, name, path.lstrip("/")))]
    remove_if_unused(d for d in dirs if os.path.isdir(d))


__all__ = ["Manager", "detect_mode", "manager_for", "manager_from_state", "remove_if_empty"]
