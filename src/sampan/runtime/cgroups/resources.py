"""Pieces of the OCI resources -> cgroup files translation that v1 and v2 share.

A planner turns one section of linux.resources into a Plan, an ordered list of
(file, value) writes; the managers route each file to the directory of its controller
(the file name's prefix), so planners stay pure and testable.
"""
from __future__ import annotations

from .fs import Plan

# The controllers each resources section writes to, per cgroup version.
V1_CONTROLLERS = {
    "memory": ("memory",),
    "cpu": ("cpu", "cpuset"),
    "pids": ("pids",),
    "blockIO": ("blkio",),
    "hugepageLimits": ("hugetlb",),
    "network": ("net_cls", "net_prio"),
    "rdma": ("rdma",),
    "devices": ("devices",),
}
V2_CONTROLLERS = {
    "memory": ("memory",),
    "cpu": ("cpu", "cpuset"),
    "pids": ("pids",),
    "blockIO": ("io",),
    "hugepageLimits": ("hugetlb",),
    "rdma": ("rdma",),
}


def controller_of(name: str) -> str:
    """"memory.max" -> "memory": cgroup files are named after their controller."""
    return name.split(".", 1)[0]


def integer(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    return value


def optional(section: dict, key: str, what: str) -> int | None:
    """An integer field where absent and 0 both mean "leave unchanged" (as Go's zero value)."""
    value = section.get(key)
    if value is None:
        return None
    return integer(value, f"{what}.{key}") or None


def memory_value(mem: dict, key: str) -> int | None:
    """A memory section byte count: None (absent or 0) to leave alone, -1 for unlimited."""
    value = optional(mem, key, "memory")
    if value is not None and value < -1:
        raise ValueError(f"memory.{key} must be positive or -1 (unlimited), got {value}")
    return value


def device(entry: dict, what: str) -> str:
    """"major:minor" of a blockIO device entry."""
    try:
        return f"{integer(entry['major'], what + '.major')}:{integer(entry['minor'], what + '.minor')}"
    except (KeyError, TypeError):
        raise ValueError(f"{what}: each entry needs integer major and minor, got {entry!r}") from None


def hugepage_limits(limits: list) -> list[tuple[str, str]]:
    """(page size, limit) pairs; the size ("2MB", "1GB") becomes part of a file name."""
    out = []
    for entry in limits:
        size = entry.get("pageSize")
        if not (isinstance(size, str) and size[:-2].isdigit() and size[-2:] in ("KB", "MB", "GB")):
            raise ValueError(f"hugepageLimits: invalid pageSize {size!r} (want e.g. '2MB')")
        out.append((size, str(integer(entry.get("limit"), "hugepageLimits.limit"))))
    return out


def pids(section: dict) -> Plan:
    limit = section.get("limit")
    if limit is None:
        return []
    limit = integer(limit, "pids.limit")
    return [("pids.max", str(limit) if limit > 0 else "max")]


def rdma(section: dict) -> Plan:
    plan: Plan = []
    for dev, limits in section.items():
        if not dev or any(c.isspace() for c in dev):
            raise ValueError(f"rdma: invalid device name {dev!r}")
        fields = [dev]
        for key, field in (("hcaHandles", "hca_handle"), ("hcaObjects", "hca_object")):
            if limits.get(key) is not None:
                fields.append(f"{field}={integer(limits[key], f'rdma.{dev}.{key}')}")
        if len(fields) > 1:
            plan.append(("rdma.max", " ".join(fields)))
    return plan


def cpuset(section: dict) -> Plan:
    plan: Plan = []
    for key, name in (("cpus", "cpuset.cpus"), ("mems", "cpuset.mems")):
        if section.get(key):
            plan.append((name, str(section[key])))
    return plan
