"""The devices cgroup rules a container gets: its config's, then what every container needs.

As runc does, the standard nodes (/dev/null, the ptys, tun, ...) and mknod of anything stay
allowed whatever the config denies; devices the config creates still need a rule of their own.
"""
from __future__ import annotations

from .cgroups.devices import DEFAULT_DEVICE_RULES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def with_device_rules(linux: dict[str, Any]) -> dict[str, Any] | None:
    """linux.resources with the always-allowed device rules appended (None if nothing to set)."""
    resources = linux.get("resources")
    if resources is None:
        return None
    rules = list(resources.get("devices") or [])
    if not rules:
        return resources
    rules.extend(DEFAULT_DEVICE_RULES)
    return {**resources, "devices": rules}
