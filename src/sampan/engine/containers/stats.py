"""What runs in a container, as the API shows it: top (its processes) and stats (one sample of
its cgroups and interfaces, in Docker's /containers/{id}/stats shape)."""
from __future__ import annotations

import os
import subprocess
from typing import Any

from ...timefmt import ZERO_TIME, rfc3339
from .. import netconfig
from ..errors import Conflict, EngineError
from ..networking import interface_stats
from .base import EngineBase
from .state import LIVE, require


class StatsMixin(EngineBase):
    def top(self, ref: str, ps_args: str = "-ef") -> dict:
        rec = self._get(ref)
        require("processes", self._status(rec), ref, rec["id"], rec["name"])
        pids = set(self._supervisor_answer("pids", rec)["pids"])
        args = (ps_args or "-ef").split()
        out = subprocess.run(["ps", *args], capture_output=True, text=True)
        if out.returncode != 0:
            raise EngineError(f"Error running ps: {out.stderr.strip()}")
        lines = out.stdout.splitlines()
        titles = lines[0].split()
        try:
            pidx = titles.index("PID")
        except ValueError:
            raise EngineError("Couldn't find PID field in ps output") from None
        procs = []
        for line in lines[1:]:
            fields = line.split(None, len(titles) - 1)
            if len(fields) > pidx and fields[pidx].isdigit() and int(fields[pidx]) in pids:
                procs.append(fields)
        return {"Titles": titles, "Processes": procs}

    def _supervisor_answer(self, op: str, rec: dict) -> dict:
        from ...supervisor.client import SupervisorError
        try:
            return self._call(op, container=rec["id"])
        except SupervisorError as e:
            if e.code in ("not_found", "conflict"):  # it has just exited
                raise Conflict(f"Container {rec['id']} is not running") from None
            raise EngineError(str(e)) from None

    def stats(self, ref: str) -> dict:
        """One sample as Docker's /containers/{id}/stats gives it (zeroes once it has stopped)."""
        rec = self._get(ref)
        out: dict[str, Any] = {"id": rec["id"], "name": "/" + rec["name"], "read": rfc3339(),
                               "preread": ZERO_TIME, "pids_stats": {}, "memory_stats": {},
                               "cpu_stats": {"cpu_usage": {"total_usage": 0}, "throttling_data": {}},
                               "precpu_stats": {"cpu_usage": {"total_usage": 0}, "throttling_data": {}},
                               "blkio_stats": {}, "num_procs": 0, "storage_stats": {}}
        if self._status(rec) not in LIVE:
            return out
        try:
            sample = self._supervisor_answer("stats", rec)["stats"]
        except Conflict:
            return out
        memory, cpu, pids = sample.get("memory") or {}, sample.get("cpu") or {}, sample.get("pids") or {}
        if pids:
            out["pids_stats"] = {"current": pids.get("current", 0),
                                 **({"limit": pids["limit"]} if pids.get("limit") else {})}
        if memory:
            out["memory_stats"] = {"usage": memory.get("usage", 0), "stats": memory.get("stat") or {},
                                   "limit": memory.get("limit") or _host_memory(),
                                   **({"max_usage": memory["max_usage"]} if memory.get("max_usage") else {})}
        if cpu:
            usage = {"total_usage": cpu.get("usage_ns", 0), "usage_in_kernelmode": cpu.get("system_ns", 0),
                     "usage_in_usermode": cpu.get("user_ns", 0)}
            if cpu.get("percpu_ns"):
                usage["percpu_usage"] = cpu["percpu_ns"]
            out["cpu_stats"] = {"cpu_usage": usage, "system_cpu_usage": _system_cpu_ns(),
                                "online_cpus": os.cpu_count() or 1,
                                "throttling_data": {"periods": cpu.get("periods", 0),
                                                    "throttled_periods": cpu.get("throttled_periods", 0),
                                                    "throttled_time": cpu.get("throttled_ns", 0)}}
        if netconfig.kind_of(netconfig.mode_of(rec["host_config"])) == "network":
            out["networks"] = interface_stats(int(rec["state"].get("Pid") or 0))
        return out


def _system_cpu_ns() -> int:
    """The host's CPU time (all CPUs) in ns, from /proc/stat, as Docker's system_cpu_usage."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:8]
    except OSError:
        return 0
    return sum(int(x) for x in fields) * 1_000_000_000 // (os.sysconf("SC_CLK_TCK") or 100)


def _host_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
