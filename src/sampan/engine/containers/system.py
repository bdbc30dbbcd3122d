"""`/info` and `/version`: what the daemon reports about itself and its host, defined once."""
from __future__ import annotations

import os
import platform
import threading
import time

from ... import API_VERSION, MIN_API_VERSION, __version__
from .base import EngineBase
from .create import LOG_DRIVERS
from .state import ACTIVE, STOPPED, Status, status_of


def _arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _mem_total() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


class SystemMixin(EngineBase):
    def info(self) -> dict:
        recs = self.store.all()

        def count(statuses: frozenset[Status]) -> int:
            return sum(1 for r in recs if status_of(r["state"]) in statuses)

        return {
            "ID": "", "Containers": len(recs), "ContainersRunning": count(ACTIVE - {Status.PAUSED}),
            "ContainersPaused": count(frozenset({Status.PAUSED})), "ContainersStopped": count(STOPPED),
            "Images": len(self.images.list()), "Driver": "overlay2", "DriverStatus": [],
            "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "null"], "Authorization": None,
                        "Log": list(LOG_DRIVERS)},
            "MemoryLimit": True, "SwapLimit": True, "CpuCfsPeriod": True, "CpuCfsQuota": True,
            "CPUShares": True, "CPUSet": True, "PidsLimit": True, "IPv4Forwarding": True,
            "Debug": False, "NFd": len(os.listdir("/proc/self/fd")), "NGoroutines": threading.active_count(),
            "SystemTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "LoggingDriver": "json-file",
            "CgroupDriver": "cgroupfs",
            "CgroupVersion": "2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "1",
            "NEventsListener": 0, "KernelVersion": platform.release(), "OperatingSystem": _os_name(),
            "OSVersion": "", "OSType": "linux", "Architecture": platform.machine(),
            "IndexServerAddress": "https://index.docker.io/v1/",
            "NCPU": os.cpu_count() or 1, "MemTotal": _mem_total(), "DockerRootDir": self.root,
            "HttpProxy": "", "HttpsProxy": "", "NoProxy": "", "Name": platform.node(), "Labels": [],
            "ExperimentalBuild": False, "ServerVersion": __version__,
            "Runtimes": self.runtimes, "DefaultRuntime": self.default_runtime,
            "Swarm": {"LocalNodeState": "inactive", "NodeID": "", "NodeAddr": "", "ControlAvailable": False,
                      "Error": "", "RemoteManagers": None},
            "LiveRestoreEnabled": True, "Isolation": "", "InitBinary": "",
            "SecurityOptions": ["name=seccomp,profile=builtin", "name=cgroupns"], "Warnings": None,
        }

    def version(self) -> dict:
        details = {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "Os": "linux", "Arch": _arch(),
                   "KernelVersion": platform.release(), "GoVersion": "python" + platform.python_version()}
        return {"Platform": {"Name": "sampan"},
                "Components": [{"Name": "Engine", "Version": __version__, "Details": details}],
                "Version": __version__, "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
                "GitCommit": "", "GoVersion": details["GoVersion"], "Os": "linux", "Arch": _arch(),
                "KernelVersion": platform.release(), "BuildTime": ""}
