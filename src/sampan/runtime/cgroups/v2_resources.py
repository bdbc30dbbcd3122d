"""OCI linux.resources -> cgroup v2 file writes, with the v1-to-v2 value conversions.

plan() covers the sections with v1 counterparts and unified() the raw v2 entries, which the
manager writes last. devices are not here (v2 has no devices files, see devices_bpf).
network (net_cls, net_prio) has no v2 equivalent: asking for it fails (runc ignores it).
"""
from __future__ import annotations

from . import resources as common
from .fs import Files, Plan


def plan(res: dict, files: Files) -> Plan:
    out: Plan = []
    for key, planner in _PLANNERS:
        section = res.get(key)
        if section is not None:
            out += planner(section, files)
    return out


# -- conversions (pure) ---------------------------------------------------------------------
def cpu_weight(shares: int) -> int:
    """cpu.shares (2..262144, default 1024) -> cpu.weight (1..10000, default 100), linearly."""
    shares = min(max(shares, 2), 262144)
    return 1 + ((shares - 2) * 9999) // 262142


def io_weight(blkio_weight: int) -> int:
    """blkio.weight (10..1000) -> io.weight (1..10000), linearly."""
    if not 10 <= blkio_weight <= 1000:
        raise ValueError(f"blockIO weight must be 10..1000, got {blkio_weight}")
    return 1 + (blkio_weight - 10) * 9999 // 990


def cpu_max(quota: int | None, period: int | None, current: str) -> str | None:
    """cpu.max "QUOTA PERIOD" ("max" = no quota); a field not given keeps its `current` value.
    None when neither is given."""
    if quota is None and period is None:
        return None
    cur_quota, _, cur_period = current.partition(" ")
    q = cur_quota if quota is None else ("max" if quota < 0 else str(quota))
    p = cur_period if period is None else str(period)
    return f"{q} {p}"


def swap_max(swap: int | None, limit: int | None) -> str | None:
    """OCI swap is the memory+swap limit (v1's memsw); v2's memory.swap.max counts swap
    alone, so it is swap - limit. None when nothing is to be written."""
    if swap is None:
        return "max" if limit == -1 else None  # unlimited memory means unlimited swap too
    if swap == -1:
        return "max"
    if limit is None or limit == -1:
        raise ValueError("memory.swap needs a memory.limit to be set")
    if swap < limit:
        raise ValueError(f"memory.swap ({swap}) must be >= memory.limit ({limit}): it is memory+swap")
    return str(swap - limit)


def limit_value(value: int) -> str:
    """A memory limit for a v2 file: -1 is "max"."""
    return "max" if value == -1 else str(value)


# -- planners -----------------------------------------------------------------------------
def memory(mem: dict, files: Files) -> Plan:
    limit = common.memory_value(mem, "limit")
    swap = common.memory_value(mem, "swap")
    if mem.get("swappiness") not in (None, -1):
        raise ValueError("memory.swappiness is not supported on cgroup v2")
    if mem.get("disableOOMKiller"):
        raise ValueError("memory.disableOOMKiller is not supported on cgroup v2")
    if mem.get("checkBeforeUpdate") and limit is not None and limit > 0:
        usage = int(files.read("memory.current"))
        if limit < usage:
            raise ValueError(f"memory.limit {limit} is below the current usage {usage}")
    out: Plan = []
    swap_value = swap_max(swap, limit)
    # Without swap accounting there is no memory.swap.max; "max" and "0" then already hold.
    if swap_value is not None and (files.exists("memory.swap.max") or swap_value not in ("max", "0")):
        out.append(("memory.swap.max", swap_value))
    if limit is not None:
        out.append(("memory.max", limit_value(limit)))
    reservation = common.memory_value(mem, "reservation")
    if reservation is not None:
        out.append(("memory.low", limit_value(reservation)))
    # kernel and kernelTCP are ignored: v2 accounts kernel memory with the rest.
    return out


def cpu(section: dict, files: Files) -> Plan:
    out: Plan = []
    shares = common.optional(section, "shares", "cpu")
    if shares is not None:
        out.append(("cpu.weight", str(cpu_weight(shares))))
    quota = common.optional(section, "quota", "cpu")
    period = common.optional(section, "period", "cpu")
    if quota is not None or period is not None:
        value = cpu_max(quota, period, files.read("cpu.max"))
        if value is not None:
            out.append(("cpu.max", value))
    if section.get("burst") is not None:
        out.append(("cpu.max.burst", str(common.integer(section["burst"], "cpu.burst"))))
    if common.optional(section, "realtimeRuntime", "cpu") or common.optional(section, "realtimePeriod", "cpu"):
        raise ValueError("cpu.realtimeRuntime/realtimePeriod need cgroup v1 (v2 has no RT group scheduling)")
    if section.get("idle") is not None:
        out.append(("cpu.idle", str(common.integer(section["idle"], "cpu.idle"))))
    return out + common.cpuset(section)


def pids(section: dict, files: Files) -> Plan:
    return common.pids(section)


def io(bio: dict, files: Files) -> Plan:
    out: Plan = []
    # BFQ's io.bfq.weight takes blkio's own 10..1000 scale; io.weight needs converting.
    bfq = files.exists("io.bfq.weight")
    weight = common.optional(bio, "weight", "blockIO")
    if weight is not None:
        out.append(("io.bfq.weight", str(weight)) if bfq else ("io.weight", str(io_weight(weight))))
    # leafWeight has no v2 counterpart (no internal tasks competing with children); ignored.
    for entry in bio.get("weightDevice") or []:
        if entry.get("weight") is None:
            continue
        dev = common.device(entry, "blockIO.weightDevice")
        w = common.integer(entry["weight"], "blockIO.weightDevice.weight")
        out.append(("io.bfq.weight", f"{dev} {w}") if bfq else ("io.weight", f"{dev} {io_weight(w)}"))
    for key, field in _THROTTLE_FIELDS:
        for entry in bio.get(key) or []:
            dev = common.device(entry, f"blockIO.{key}")
            rate = common.integer(entry.get("rate"), f"blockIO.{key}.rate")
            # 0 lifts the limit, as writing 0 does on v1.
            out.append(("io.max", f"{dev} {field}={rate or 'max'}"))
    return out


def hugepages(limits: list, files: Files) -> Plan:
    return [(f"hugetlb.{size}.max", value) for size, value in common.hugepage_limits(limits)]


def rdma(section: dict, files: Files) -> Plan:
    return common.rdma(section)


def network(section: dict, files: Files) -> Plan:
    for key, controller in (("classID", "net_cls"), ("priorities", "net_prio")):
        if section.get(key):
            raise ValueError(f"cgroup: cannot set network.{key}: cgroup v2 has no {controller} controller")
    return []


def unified(entries: dict) -> Plan:
    """linux.resources.unified: file name -> value, written verbatim."""
    out: Plan = []
    for name, value in entries.items():
        if not name or "/" in name or name in (".", "..") or "\0" in name:
            raise ValueError(f"unified: {name!r} is not a cgroup file name")
        if not isinstance(value, str):
            raise ValueError(f"unified: value for {name} must be a string, got {value!r}")
        out.append((name, value))
    return out


_THROTTLE_FIELDS = (
    ("throttleReadBpsDevice", "rbps"),
    ("throttleWriteBpsDevice", "wbps"),
    ("throttleReadIOPSDevice", "riops"),
    ("throttleWriteIOPSDevice", "wiops"),
)

_PLANNERS = (
    ("pids", pids),
    ("memory", memory),
    ("blockIO", io),
    ("cpu", cpu),
    ("hugepageLimits", hugepages),
    ("rdma", rdma),
    ("network", network),
)
