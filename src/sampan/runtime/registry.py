"""The runtimes a container can run with, by name (HostConfig.Runtime), as dockerd's
`--add-runtime name=path` and `"runtimes": {name: {"path", "runtimeArgs"}}` configure them.

- "sampan": the built-in Linux runtime (runtime.container.Runtime, in-process: the
  supervisor forks containers from its warm interpreter), the default;
- "runc": the runc binary on $PATH (/usr/sbin/runc), unless configured otherwise;
- any other name: an external OCI runtime binary by path, with optional runtime args.
- A VM-isolated runtime (a later issue) registers its class in KINDS and is then configured
  by name like the others ({"kind": "vm", ...} instead of a path).

Each external runtime keeps its state under <exec_root>/runtimes/<name>/ (its --root); the
built-in one under <exec_root>/runtime/.
"""
from __future__ import annotations

import os
import shutil
from typing import Any, Callable

from .api import Runtime
from .container import Runtime as LinuxRuntime
from .errors import RuntimeError_

BUILTIN = "sampan"
RUNC = "runc"


class BuiltinRuntime(LinuxRuntime):
    """runtime.container.Runtime with what the protocol adds to it (stats, oom_killed)."""

    name = BUILTIN

    def _cgroup(self, container_id: str) -> Any:
        from . import state as st
        from .cgroups import manager_from_state
        record = st.load(self.root, container_id)
        if not record.get("cgroup"):
            raise RuntimeError_(f"container {container_id} has no cgroup")
        return manager_from_state(record["cgroup"])

    def stats(self, container_id: str) -> dict[str, Any]:
        return self._cgroup(container_id).stats()

    def oom_killed(self, container_id: str) -> bool:
        try:
            return bool(self._cgroup(container_id).oom_killed())
        except (OSError, RuntimeError_):  # the cgroup may be gone already
            return False


# kind -> factory(name, exec_root, config) for runtimes that are not an OCI binary.
KINDS: dict[str, Callable[[str, str, dict[str, Any]], Runtime]] = {}


class UnknownRuntime(RuntimeError_):
    pass


def check_name(name: str) -> None:
    if not name or "/" in name or name in (".", "..") or len(name) > 64:
        raise UnknownRuntime(f"invalid runtime name: {name!r}")


class Registry:
    """Runtimes by name; each is built once and kept (they are cheap: a root and a binary)."""

    def __init__(self, exec_root: str, builtin: Runtime | None = None) -> None:
        self.exec_root = os.path.abspath(exec_root)
        self.builtin = builtin or BuiltinRuntime(root=os.path.join(self.exec_root, "runtime"))
        self.configured: dict[str, dict[str, Any]] = {}
        self._built: dict[tuple[str, str, tuple[str, ...]], Runtime] = {}

    def add(self, name: str, path: str | None = None, args: list[str] | None = None, kind: str | None = None,
            **options: Any) -> None:
        """Configures a runtime (dockerd's --add-runtime name=path)."""
        check_name(name)
        if name == BUILTIN:
            raise UnknownRuntime(f"runtime name {BUILTIN!r} is the built-in runtime's")
        self.configured[name] = {"path": path, "args": list(args or []), "kind": kind, **options}

    def get(self, name: str | None = None, path: str | None = None, args: list[str] | None = None) -> Runtime:
        """The runtime for a name (None or "sampan": the built-in one), with the path and args
        given here overriding those configured (the supervisor receives them per create)."""
        if not name or name == BUILTIN:
            if path:
                raise UnknownRuntime(f"runtime {BUILTIN!r} is built in; it takes no path")
            return self.builtin
        check_name(name)
        config = dict(self.configured.get(name) or {})
        kind = config.get("kind")
        if kind:
            factory = KINDS.get(kind)
            if factory is None:
                raise UnknownRuntime(f"runtime {name}: unknown kind {kind!r}")
            key = (name, kind, ())
            if key not in self._built:
                self._built[key] = factory(name, self.exec_root, config)
            return self._built[key]
        binary = path or config.get("path") or (shutil.which(RUNC) if name == RUNC else None)
        if not binary:
            raise UnknownRuntime(f"unknown or invalid runtime name: {name}")
        argv = tuple(args if args is not None else config.get("args") or ())
        key = (name, binary, argv)
        runtime = self._built.get(key)
        if runtime is None:
            from .external import ExternalRuntime  # (subprocess, tempfile: only when one is used)
            runtime = ExternalRuntime(name, binary, os.path.join(self.exec_root, "runtimes", name), list(argv))
            self._built[key] = runtime
        return runtime
