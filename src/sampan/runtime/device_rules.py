"""The devices cgroup rules a container gets: its config's, then what every container needs.

As runc does, the standard nodes (/dev/null, the ptys, tun, ...) and mknod of anything stay
allowed whatever the config denies, and so are the devices the config asks to create.
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_ALWAYS = (  # type, major, minor, access; None is the wildcard
    ("c", None, None, "m"), ("b", None, None, "m"),
    ("c", 1, 3, "rwm"), ("c", 1, 5, "rwm"), ("c", 1, 7, "rwm"), ("c", 1, 8, "rwm"), ("c", 1, 9, "rwm"),
    ("c", 5, 0, "rwm"), ("c", 5, 2, "rwm"), ("c", 136, None, "rwm"), ("c", 10, 200, "rwm"),
)


def with_device_rules(linux: dict[str, Any]) -> dict[str, Any] | None:
    """linux.resources with the always-allowed device rules appended (None if nothing to set)."""
    resources = linux.get("resources")
    if resources is None:
        return None
    rules = list(resources.get("devices") or [])
    if not rules:
        return resources
    for kind, major, minor, access in _ALWAYS:
        rule: dict[str, Any] = {"allow": True, "type": kind, "access": access}
        if major is not None:
            rule["major"] = major
        if minor is not None:
            rule["minor"] = minor
        rules.append(rule)
    for dev in linux.get("devices") or []:
        if dev.get("type", "c") in ("c", "b", "u"):
            rules.append({"allow": True, "type": "c" if dev.get("type") == "u" else dev.get("type", "c"),
                          "major": dev.get("major", 0), "minor": dev.get("minor", 0), "access": "rwm"})
    return {**resources, "devices": rules}
