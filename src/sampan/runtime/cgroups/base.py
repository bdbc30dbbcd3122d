"""The interface every cgroup manager offers, and the parts that work the same on v1 and v2."""
from __future__ import annotations

import abc
import os

from . import fs
from .hierarchy import UNIFIED
from .join import Join

SIGKILL = 9  # the same on every Linux architecture; saves importing signal (enum) at start

# How long freeze() waits for every task to stop before giving up and thawing again.
FREEZE_TIMEOUT = 5.0


class Manager(abc.ABC):
    """One container's cgroup(s). Lifecycle: create() -> join() for the process forked next,
    which enters them itself -> set(resources) ... -> kill_all(SIGKILL) -> destroy(). If
    create() or set() raises, call destroy()."""

    mode: str

    def __init__(self, root: str, created: list[str] | None = None) -> None:
        self.root = root  # the cgroup filesystem root the manager was made for
        # Ancestor dirs create() made; destroy() removes them again when nothing else uses them.
        self._created: list[str] = list(created or [])

    # -- lifecycle ---------------------------------------------------------------------
    @abc.abstractmethod
    def create(self) -> None:
        """mkdir the cgroup(s) and missing ancestors; idempotent."""

    @abc.abstractmethod
    def set(self, resources: dict) -> None:
        """Apply an OCI linux.resources dict (config.json keys). Absent keys change nothing."""

    def destroy(self) -> None:
        """Remove the cgroup(s), children first, and the ancestors create() made; a missing or
        half-created cgroup is fine. Raises OSError if processes still keep a cgroup busy."""
        first_error: OSError | None = None
        for leaf in self._leaves():
            try:
                fs.remove_tree(leaf)
            except OSError as e:
                first_error = first_error or e
        fs.remove_if_unused(self._created)
        if first_error is not None:
            raise first_error

    # -- freezer -----------------------------------------------------------------------
    @abc.abstractmethod
    def freeze(self) -> None:
        """Stop every task; returns once all are frozen (TimeoutError and thawed otherwise)."""

    @abc.abstractmethod
    def thaw(self) -> None: ...

    @abc.abstractmethod
    def state(self) -> str:
        """"frozen" or "thawed"."""

    @abc.abstractmethod
    def can_freeze(self) -> bool: ...

    # -- processes ---------------------------------------------------------------------
    @abc.abstractmethod
    def pids(self) -> list[int]:
        """Every pid in the cgroup and its descendants."""

    def kill_all(self, sig: int) -> None:
        """Signal every process in the cgroup. Tasks are frozen meanwhile so none can fork
        past the sweep; a cgroup frozen beforehand stays so, unless SIGKILL must reach it."""
        if not self._exists():
            return
        frozen_before = self.can_freeze() and self.state() == "frozen"
        froze = False
        if self.can_freeze() and not frozen_before:
            try:
                self.freeze()
                froze = True
            except TimeoutError:
                pass  # still deliver the signal; only the fork race stays open
        try:
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        finally:
            if froze or (frozen_before and sig == SIGKILL):
                self.thaw()

    # -- accounting --------------------------------------------------------------------
    @abc.abstractmethod
    def stats(self) -> dict:
        """Usage figures; a section is present only where its controller is:
        {"memory": {"usage", "max_usage" (None if unknown), "limit" (None = unlimited), "stat": {...}},
         "cpu": {"usage_ns", "user_ns", "system_ns", "periods", "throttled_periods",
                 "throttled_ns", "percpu_ns" (v1 only)},
         "pids": {"current", "limit" (None = unlimited)},
         "oom_kill": count}"""

    @abc.abstractmethod
    def oom_killed(self) -> bool:
        """Whether the OOM killer has killed a task in this cgroup."""

    # -- identity ----------------------------------------------------------------------
    @abc.abstractmethod
    def paths(self) -> dict[str, str]:
        """hierarchy key -> absolute cgroup dir: a v1 controller ("memory", "name=systemd")
        or "" for cgroup2, as in /proc/<pid>/cgroup."""

    def join(self) -> Join:
        """Handles through which a process forked next puts itself into the cgroup(s) (see
        join.py); the caller closes them in the parent after the fork."""
        dirs = self.paths()
        return Join(unique([d for key, d in dirs.items() if key != UNIFIED]), dirs.get(UNIFIED))

    def to_state(self) -> dict:
        """JSON-serialisable; manager_from_state() rebuilds the manager from it."""
        return {"mode": self.mode, "root": self.root, "paths": self.paths(), "created": list(self._created)}

    def _leaves(self) -> list[str]:
        """The distinct container cgroup dirs (co-mounted v1 controllers share one)."""
        return unique(list(self.paths().values()))

    def _exists(self) -> bool:
        return any(os.path.isdir(d) for d in self._leaves())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.paths()!r})"


def unique(items: list[str]) -> list[str]:
    """Distinct items in first-seen order."""
    return list(dict.fromkeys(items))


def limit_or_none(value: str) -> int | None:
    """A limit file's value as a number, None for unlimited ("max" on v2, ~2^63 on v1)."""
    if value == "max":
        return None
    number = int(value)
    return None if number >= 1 << 62 else number
