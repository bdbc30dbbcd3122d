"""cgroups for containers: one Manager interface over cgroup v1, v2 and hybrid hosts.

manager_for() picks the manager for this host; manager_from_state() rebuilds one from to_state().
"""
from .base import Manager
from .factory import manager_for, manager_from_state
from .hierarchy import detect_mode

__all__ = ["Manager", "detect_mode", "manager_for", "manager_from_state"]
