"""The cgroup v2 manager: one directory in the unified hierarchy."""
from __future__ import annotations

import errno
import os

from . import fs
from .base import FREEZE_TIMEOUT, SIGKILL, Manager, limit_or_none
from .hierarchy import UNIFIED
from .resources import V2_CONTROLLERS, controller_of


class V2Manager(Manager):
    mode = "v2"

    def __init__(
        self,
        root: str,
        path: str,
        created: list[str] | None = None,
        *,
        mountpoint: str | None = None,
        enable_all: bool = True,
    ) -> None:
        """`path` is the container's cgroup dir; `mountpoint` the cgroup2 mount holding it
        (defaults to `root`; a hybrid host has it at root/unified). With `enable_all`,
        create() offers the container every controller its parents have, as runc does, so
        stats and later updates find their files; else set() enables just what it needs."""
        super().__init__(root, created)
        self.mountpoint = mountpoint or root
        self._enable_all = enable_all
        if os.path.commonpath([self.mountpoint, path]) != self.mountpoint or path == self.mountpoint:
            raise ValueError(f"cgroup v2: {path} is not a cgroup below {self.mountpoint}")
        self._path = path

    def paths(self) -> dict[str, str]:
        return {UNIFIED: self._path}

    def create(self) -> None:
        fs.make_dirs(self._path, self._created)
        if self._enable_all:
            self._offer(self.hierarchy_controllers())

    def set(self, resources: dict) -> None:
        # Input is checked before the first write; enabling controllers comes before
        # planning, which reads some of their files. (The planners load here for the reason
        # v1.V1Manager.set gives.)
        from . import devices, v2_resources
        unified = v2_resources.unified(resources.get("unified") or {})
        rules = resources.get("devices")
        device_state = None if rules is None else devices.effective(devices.parse_rules(rules))
        wanted = [c for key, section in resources.items() if section for c in V2_CONTROLLERS.get(key, ())]
        self._offer(wanted + [controller_of(name) for name, _value in unified])
        plan = v2_resources.plan(resources, fs.Files(lambda _name: self._path))
        self._write(plan)
        if device_state is not None:
            from . import devices_bpf  # loads ctypes: only containers with device rules pay

            devices_bpf.install(self._path, device_state)
        self._write(unified)  # last, so explicit files win over converted values

    def _write(self, plan: fs.Plan) -> None:
        for name, value in plan:
            try:
                fs.write(self._path, name, value)
            except FileNotFoundError:
                controller = controller_of(name)
                if controller == "cgroup" or controller in self.controllers():
                    raise fs.missing_file(self._path, name, value, controller) from None
                raise OSError(
                    errno.ENOENT,
                    f"cgroup: write {name}={value}: the {controller} controller is not enabled here "
                    f"(cgroup.controllers: {' '.join(self.controllers()) or 'none'})",
                    os.path.join(self._path, name),
                ) from None

    def _offer(self, controllers: list[str]) -> None:
        """Enable `controllers` in cgroup.subtree_control from the mount down to our parent.
        Best effort, as runc: a parent holding tasks refuses (EBUSY), a controller may be
        missing from the host; a write that then lacks its file fails in set() with a
        message naming the controller."""
        missing = set(controllers) - set(self.controllers()) - {"cgroup"}
        if not missing:
            return
        for d in self._ancestors():
            try:
                available = set(fs.read(d, "cgroup.controllers").split())
                enabled = set(fs.read(d, "cgroup.subtree_control").split())
            except FileNotFoundError:
                return
            for controller in sorted((missing & available) - enabled):
                try:
                    fs.write(d, "cgroup.subtree_control", "+" + controller)
                except OSError:
                    pass

    def _ancestors(self) -> list[str]:
        """The mount's root cgroup down to our parent."""
        dirs = [self.mountpoint]
        rel = os.path.relpath(os.path.dirname(self._path), self.mountpoint)
        if rel != ".":
            for part in rel.split("/"):
                dirs.append(os.path.join(dirs[-1], part))
        return dirs

    def hierarchy_controllers(self) -> list[str]:
        """Controllers the hierarchy has at all (its root's cgroup.controllers)."""
        return fs.read(self.mountpoint, "cgroup.controllers").split()

    def controllers(self) -> list[str]:
        """Controllers available in the container's cgroup."""
        try:
            return fs.read(self._path, "cgroup.controllers").split()
        except FileNotFoundError:
            return []

    # -- freezer -----------------------------------------------------------------------
    def can_freeze(self) -> bool:
        return os.path.exists(os.path.join(self._path, "cgroup.freeze"))

    def freeze(self) -> None:
        fs.write(self._path, "cgroup.freeze", "1")
        if not fs.wait_for(lambda: fs.read_keyed(self._path, "cgroup.events").get("frozen") == 1, FREEZE_TIMEOUT):
            self.thaw()
            raise TimeoutError(f"cgroup: {self._path} did not freeze within {FREEZE_TIMEOUT}s")

    def thaw(self) -> None:
        fs.write(self._path, "cgroup.freeze", "0")

    def state(self) -> str:
        # cgroup.freeze is the state asked for; cgroup.events lags while tasks settle.
        return "frozen" if fs.read(self._path, "cgroup.freeze") == "1" else "thawed"

    # -- processes and accounting ------------------------------------------------------
    def pids(self) -> list[int]:
        return fs.procs(self._path)

    def kill_all(self, sig: int) -> None:
        # cgroup.kill (5.14+) kills the whole subtree atomically, frozen tasks included.
        if sig == SIGKILL and os.path.exists(os.path.join(self._path, "cgroup.kill")):
            fs.write(self._path, "cgroup.kill", "1")
        else:
            super().kill_all(sig)

    def stats(self) -> dict:
        d = self._path
        out: dict = {}
        if os.path.exists(os.path.join(d, "memory.current")):
            peak = os.path.join(d, "memory.peak")  # 5.19+
            out["memory"] = {
                "usage": int(fs.read(d, "memory.current")),
                "max_usage": int(fs.read(d, "memory.peak")) if os.path.exists(peak) else None,
                "limit": limit_or_none(fs.read(d, "memory.max")),
                "stat": fs.read_keyed(d, "memory.stat"),
            }
            out["oom_kill"] = fs.read_keyed(d, "memory.events").get("oom_kill", 0)
        if os.path.exists(os.path.join(d, "cpu.stat")):
            cpu = fs.read_keyed(d, "cpu.stat")
            out["cpu"] = {
                "usage_ns": cpu.get("usage_usec", 0) * 1000,
                "user_ns": cpu.get("user_usec", 0) * 1000,
                "system_ns": cpu.get("system_usec", 0) * 1000,
                "periods": cpu.get("nr_periods", 0),
                "throttled_periods": cpu.get("nr_throttled", 0),
                "throttled_ns": cpu.get("throttled_usec", 0) * 1000,
            }
        if os.path.exists(os.path.join(d, "pids.current")):
            out["pids"] = {
                "current": int(fs.read(d, "pids.current")),
                "limit": limit_or_none(fs.read(d, "pids.max")),
            }
        return out

    def oom_killed(self) -> bool:
        try:
            return fs.read_keyed(self._path, "memory.events").get("oom_kill", 0) > 0
        except FileNotFoundError:
            return False

