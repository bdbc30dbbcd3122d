"""OCI linux.resources -> cgroup v1 file writes."""
from __future__ import annotations

from . import devices
from . import resources as common
from .fs import Files, Plan

def plan(res: dict, files: Files) -> Plan:
    if res.get("unified"):
        raise ValueError("unified resources require cgroup v2")
    out: Plan = []
    for key, planner in _PLANNERS:
        section = res.get(key)
        if section is not None:
            out += planner(section, files)
    return out


def memory(mem: dict, files: Files) -> Plan:
    limit = common.memory_value(mem, "limit")
    swap = common.memory_value(mem, "swap")
    out: Plan = []
    if mem.get("checkBeforeUpdate") and limit is not None and limit > 0:
        usage = int(files.read("memory.usage_in_bytes"))
        if limit < usage:
            raise ValueError(f"memory.limit {limit} is below the current usage {usage}")
    if limit == -1 and swap is None:
        swap = -1  # "unlimited memory" means memory+swap unlimited too
    if swap == -1 and not files.exists("memory.memsw.limit_in_bytes"):
        swap = None  # no swap accounting: unlimited is what we have anyway
    limit_w = [("memory.limit_in_bytes", str(limit))] if limit is not None else []
    swap_w = [("memory.memsw.limit_in_bytes", str(swap))] if swap is not None else []
    # The kernel keeps limit <= memsw at every step: when the new memsw is above the current
    # limit write it first (raising), else the limit first (lowering).
    if limit is not None and swap is not None and (swap == -1 or int(files.read("memory.limit_in_bytes")) < swap):
        out += swap_w + limit_w
    else:
        out += limit_w + swap_w
    reservation = common.memory_value(mem, "reservation")
    if reservation is not None:
        out.append(("memory.soft_limit_in_bytes", str(reservation)))
    swappiness = mem.get("swappiness")
    if swappiness is not None and swappiness != -1:
        if not 0 <= common.integer(swappiness, "memory.swappiness") <= 100:
            raise ValueError(f"memory.swappiness must be 0..100, got {swappiness}")
        out.append(("memory.swappiness", str(swappiness)))
    if mem.get("disableOOMKiller"):
        out.append(("memory.oom_control", "1"))
    # kernel and kernelTCP are ignored: kernel memory is always accounted with the rest on
    # current kernels, whose v1 kmem limits are deprecated or gone.
    return out


def cpu(section: dict, files: Files) -> Plan:
    out: Plan = []
    shares = common.optional(section, "shares", "cpu")
    if shares is not None:
        out.append(("cpu.shares", str(shares)))
    out += _cfs(section, files)
    out += _realtime(section, files)
    if section.get("idle") is not None:
        out.append(("cpu.idle", str(common.integer(section["idle"], "cpu.idle"))))
    return out + common.cpuset(section)


def _cfs(section: dict, files: Files) -> Plan:
    quota = common.optional(section, "quota", "cpu")
    period = common.optional(section, "period", "cpu")
    burst = section.get("burst")
    quota_w = [("cpu.cfs_quota_us", str(quota))] if quota is not None else []
    period_w = [("cpu.cfs_period_us", str(period))] if period is not None else []
    # Between the two writes the cgroup briefly has old quota/new period or new quota/old
    # period; the kernel rejects a ratio above the parent's, so pick the order whose
    # in-between ratio is not above the final one: shrinking period -> quota first.
    if period_w and quota_w and period < int(files.read("cpu.cfs_period_us")):
        out = quota_w + period_w
    else:
        out = period_w + quota_w
    if burst is not None:
        burst = common.integer(burst, "cpu.burst")
        # burst may never exceed quota: lowering it is safe before the quota changes,
        # raising it only after.
        burst_w = ("cpu.cfs_burst_us", str(burst))
        if burst < int(files.read("cpu.cfs_burst_us")):
            out.insert(0, burst_w)
        else:
            out.append(burst_w)
    return out


def _realtime(section: dict, files: Files) -> Plan:
    runtime = common.optional(section, "realtimeRuntime", "cpu")
    period = common.optional(section, "realtimePeriod", "cpu")
    runtime_w = [("cpu.rt_runtime_us", str(runtime))] if runtime is not None else []
    period_w = [("cpu.rt_period_us", str(period))] if period is not None else []
    # runtime <= period must hold after each write.
    if period is not None and period < int(files.read("cpu.rt_runtime_us")):
        return runtime_w + period_w
    return period_w + runtime_w


def pids(section: dict, files: Files) -> Plan:
    return common.pids(section)


def block_io(bio: dict, files: Files) -> Plan:
    out: Plan = []
    # CFQ offers blkio.weight, BFQ blkio.bfq.weight (same 10..1000 range). Neither existing is
    # reported by the write of blkio.weight failing.
    bfq = not files.exists("blkio.weight") and files.exists("blkio.bfq.weight")
    weight_file = "blkio.bfq.weight" if bfq else "blkio.weight"
    weight = common.optional(bio, "weight", "blockIO")
    if weight is not None:
        out.append((weight_file, str(weight)))
    leaf = common.optional(bio, "leafWeight", "blockIO")
    if leaf is not None:
        out.append(("blkio.leaf_weight", str(leaf)))
    for entry in bio.get("weightDevice") or []:
        dev = common.device(entry, "blockIO.weightDevice")
        if entry.get("weight") is not None:
            out.append((weight_file + "_device", f"{dev} {common.integer(entry['weight'], 'weight')}"))
        if entry.get("leafWeight") is not None:
            out.append(("blkio.leaf_weight_device", f"{dev} {common.integer(entry['leafWeight'], 'leafWeight')}"))
    for key, name in _THROTTLE_FILES:
        for entry in bio.get(key) or []:
            dev = common.device(entry, f"blockIO.{key}")
            out.append((name, f"{dev} {common.integer(entry.get('rate'), f'blockIO.{key}.rate')}"))
    return out


def hugepages(limits: list, files: Files) -> Plan:
    return [(f"hugetlb.{size}.limit_in_bytes", value) for size, value in common.hugepage_limits(limits)]


def network(net: dict, files: Files) -> Plan:
    out: Plan = []
    if net.get("classID") is not None:
        out.append(("net_cls.classid", str(common.integer(net["classID"], "network.classID"))))
    for prio in net.get("priorities") or []:
        name = prio.get("name")
        if not isinstance(name, str) or not name or any(c.isspace() for c in name):
            raise ValueError(f"network.priorities: invalid interface name {name!r}")
        out.append(("net_prio.ifpriomap", f"{name} {common.integer(prio.get('priority'), 'priority')}"))
    return out


def rdma(section: dict, files: Files) -> Plan:
    return common.rdma(section)


def device_rules(rules: list, files: Files) -> Plan:
    return devices.v1_plan(devices.effective(devices.parse_rules(rules)), files.read("devices.list"))


_THROTTLE_FILES = (
    ("throttleReadBpsDevice", "blkio.throttle.read_bps_device"),
    ("throttleWriteBpsDevice", "blkio.throttle.write_bps_device"),
    ("throttleReadIOPSDevice", "blkio.throttle.read_iops_device"),
    ("throttleWriteIOPSDevice", "blkio.throttle.write_iops_device"),
)

_PLANNERS = (
    ("devices", device_rules),
    ("cpu", cpu),
    ("memory", memory),
    ("pids", pids),
    ("blockIO", block_io),
    ("hugepageLimits", hugepages),
    ("network", network),
    ("rdma", rdma),
)
