"""The cgroup v1 manager: one directory per mounted hierarchy."""
from __future__ import annotations

import os

from . import fs
from .base import FREEZE_TIMEOUT, Manager, limit_or_none
from .resources import controller_of

# Hierarchies pids() reads, best first: any holds every task, but pids and freezer are the
# ones the container can least escape.
_PID_SOURCES = ("pids", "freezer", "memory", "cpu", "devices", "name=systemd")


class V1Manager(Manager):
    mode = "v1"

    def __init__(self, root: str, paths: dict[str, str], created: list[str] | None = None) -> None:
        super().__init__(root, created)
        if not paths:
            raise ValueError(f"cgroup v1: no hierarchy is mounted under {root}")
        self._paths = dict(paths)

    def paths(self) -> dict[str, str]:
        return dict(self._paths)

    def create(self) -> None:
        for d in self._leaves():
            fs.make_dirs(d, self._created)
        if "cpuset" in self._paths:
            _inherit_cpuset(self._paths["cpuset"])

    def set(self, resources: dict) -> None:
        # The planners load here, not with the manager: a container start sets its limits once
        # its process is forked, so they load while that process works, not before its fork.
        from . import v1_resources
        plan = v1_resources.plan(resources, fs.Files(self._dir_of))
        for name, value in plan:
            controller = controller_of(name)
            if controller not in self._paths:
                # Never dropped: a limit asked for and not applied is a container less confined.
                raise ValueError(f"cgroup: cannot set {name}={value}: the {controller} controller is not mounted "
                                 f"on this host")
            try:
                fs.write(self._paths[controller], name, value)
            except FileNotFoundError:
                raise fs.missing_file(self._paths[controller], name, value, controller) from None

    def _dir_of(self, name: str) -> str:
        controller = controller_of(name)
        if controller not in self._paths:
            raise ValueError(f"cgroup: cannot read {name}: the {controller} controller is not mounted")
        return self._paths[controller]

    # -- freezer -----------------------------------------------------------------------
    def can_freeze(self) -> bool:
        return "freezer" in self._paths

    def freeze(self) -> None:
        d = self._freezer()

        def frozen() -> bool:
            # Writing again catches tasks forked or woken since the last pass.
            fs.write(d, "freezer.state", "FROZEN")
            return fs.read(d, "freezer.state") == "FROZEN"

        if not fs.wait_for(frozen, FREEZE_TIMEOUT):
            self.thaw()
            raise TimeoutError(f"cgroup: {d} did not freeze within {FREEZE_TIMEOUT}s")

    def thaw(self) -> None:
        fs.write(self._freezer(), "freezer.state", "THAWED")

    def state(self) -> str:
        if not self.can_freeze():
            return "thawed"
        return "frozen" if fs.read(self._freezer(), "freezer.state") == "FROZEN" else "thawed"

    def _freezer(self) -> str:
        if "freezer" not in self._paths:
            raise ValueError("cgroup: the freezer controller is not mounted")
        return self._paths["freezer"]

    # -- processes and accounting ------------------------------------------------------
    def pids(self) -> list[int]:
        source = next((self._paths[c] for c in _PID_SOURCES if c in self._paths), self._leaves()[0])
        return fs.procs(source)

    def stats(self) -> dict:
        out: dict = {}
        memory = self._paths.get("memory")
        if memory and os.path.isdir(memory):
            out["memory"] = {
                "usage": int(fs.read(memory, "memory.usage_in_bytes")),
                "max_usage": int(fs.read(memory, "memory.max_usage_in_bytes")),
                "limit": limit_or_none(fs.read(memory, "memory.limit_in_bytes")),
                "stat": fs.read_keyed(memory, "memory.stat"),
            }
            out["oom_kill"] = fs.read_keyed(memory, "memory.oom_control").get("oom_kill", 0)
        cpuacct = self._paths.get("cpuacct")
        if cpuacct and os.path.isdir(cpuacct):
            out["cpu"] = _cpu_stats(cpuacct, self._paths.get("cpu"))
        pids = self._paths.get("pids")
        if pids and os.path.isdir(pids):
            out["pids"] = {
                "current": int(fs.read(pids, "pids.current")),
                "limit": limit_or_none(fs.read(pids, "pids.max")),
            }
        return out

    def oom_killed(self) -> bool:
        memory = self._paths.get("memory")
        if not memory:
            return False
        try:
            return fs.read_keyed(memory, "memory.oom_control").get("oom_kill", 0) > 0
        except FileNotFoundError:
            return False


def _inherit_cpuset(path: str) -> None:
    """A new v1 cpuset cgroup starts with empty cpus and mems and refuses tasks until they
    are set: fill each empty level, top down, from its parent."""
    empty = []
    d = path
    while os.path.exists(os.path.join(d, "cpuset.cpus")) and not (
        fs.read(d, "cpuset.cpus") and fs.read(d, "cpuset.mems")
    ):
        empty.append(d)
        d = os.path.dirname(d)
    for d in reversed(empty):
        parent = os.path.dirname(d)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if not fs.read(d, name):
                fs.write(d, name, fs.read(parent, name))


def _cpu_stats(cpuacct: str, cpu: str | None) -> dict:
    if os.path.exists(os.path.join(cpuacct, "cpuacct.usage_user")):
        user = int(fs.read(cpuacct, "cpuacct.usage_user"))
        system = int(fs.read(cpuacct, "cpuacct.usage_sys"))
    else:  # older kernels: clock ticks only
        ticks = fs.read_keyed(cpuacct, "cpuacct.stat")
        ns_per_tick = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
        user, system = ticks.get("user", 0) * ns_per_tick, ticks.get("system", 0) * ns_per_tick
    throttling = fs.read_keyed(cpu, "cpu.stat") if cpu and os.path.isdir(cpu) else {}
    return {
        "usage_ns": int(fs.read(cpuacct, "cpuacct.usage")),
        "user_ns": user,
        "system_ns": system,
        "percpu_ns": [int(v) for v in fs.read(cpuacct, "cpuacct.usage_percpu").split()],
        "periods": throttling.get("nr_periods", 0),
        "throttled_periods": throttling.get("nr_throttled", 0),
        "throttled_ns": throttling.get("throttled_time", 0),
    }
