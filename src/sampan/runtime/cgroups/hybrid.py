"""The hybrid manager: v1 hierarchies for the controllers mounted there, the cgroup2 tree at
root/unified for the rest. The container also gets its dir in the unified tree (as runc
does), so tools that look there find it; freezing goes through the v1 freezer."""
from __future__ import annotations

from .base import Manager, unique
from .hierarchy import UNIFIED
from .resources import V1_CONTROLLERS, V2_CONTROLLERS
from .v1 import V1Manager
from .v2 import V2Manager


class HybridManager(Manager):
    mode = "hybrid"

    def __init__(self, root: str, v1: V1Manager, unified: V2Manager, created: list[str] | None = None) -> None:
        super().__init__(root, created)
        self._v1 = v1
        self._v2 = unified

    def paths(self) -> dict[str, str]:
        return {**self._v1.paths(), UNIFIED: self._v2.paths()[UNIFIED]}

    def create(self) -> None:
        try:
            self._v1.create()
            self._v2.create()
        finally:
            # The parts record the ancestors they make; the whole keeps one list for state.
            self._created = unique(self._created + self._v1._created + self._v2._created)

    def set(self, resources: dict) -> None:
        if resources.get("unified"):
            raise ValueError("unified resources require cgroup v2")
        on_v1: dict = {}
        on_v2: dict = {}
        for key, section in resources.items():
            (on_v2 if self._on_unified(key) else on_v1)[key] = section
        self._v1.set(on_v1)
        self._v2.set(on_v2)

    def _on_unified(self, key: str) -> bool:
        """Whether a resources section goes to the unified tree: only when none of its v1
        controllers is mounted and the unified tree has one of its v2 controllers (device
        rules go there as an eBPF filter when v1 has no devices controller)."""
        mounted = self._v1.paths()
        if any(c in mounted for c in V1_CONTROLLERS.get(key, ())):
            return False
        if key == "devices":
            return True
        available = self._v2.hierarchy_controllers()
        return any(c in available for c in V2_CONTROLLERS.get(key, ()))

    # -- freezer (v1) ------------------------------------------------------------------
    def can_freeze(self) -> bool:
        return self._v1.can_freeze()

    def freeze(self) -> None:
        self._v1.freeze()

    def thaw(self) -> None:
        self._v1.thaw()

    def state(self) -> str:
        return self._v1.state()

    # -- processes and accounting ------------------------------------------------------
    def pids(self) -> list[int]:
        return self._v1.pids()

    def stats(self) -> dict:
        # v1 first wins: the unified tree always has a cpu.stat, but its figures are coarser
        # than cpuacct's when that is mounted.
        return {**self._v2.stats(), **self._v1.stats()}

    def oom_killed(self) -> bool:
        return self._v1.oom_killed() if "memory" in self._v1.paths() else self._v2.oom_killed()
