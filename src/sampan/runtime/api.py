"""What the engine and the supervisor ask of a runtime, as one typed protocol.

The built-in Linux runtime (runtime.container.Runtime, registered as "sampan"), an external
OCI runtime driven through its command line (runtime.external, "runc" and any binary added
by path) and, in a later issue, a VM-isolated runtime all provide it; runtime.registry picks
one by name. A container's processes are created with the caller's stdio
(ProcessOptions.stdio); with a terminal the caller receives the pty master over
ProcessOptions.terminal_receiver (runtime/console.py's SCM_RIGHTS protocol), whichever
runtime made it.

Errors: runtime.errors (ContainerNotFound, ContainerExists, BadState, RuntimeError_) with a
one-line message, for every runtime.
"""
from __future__ import annotations

from typing import Any, Protocol

from .container import CreateOptions, ExecOptions


class Runtime(Protocol):
    name: str   # the registry name ("sampan", "runc", ...)
    root: str   # the runtime's state directory (its --root)

    def create(self, container_id: str, bundle: str, opts: CreateOptions | None = None) -> int:
        """Sets the container up from its bundle; its init waits for start. Returns the init's pid
        (a child or, through the caller being a subreaper, a descendant of the caller)."""

    def start(self, container_id: str) -> None:
        """Runs the user's process in a created container."""

    def kill(self, container_id: str, sig: int, all_processes: bool = False) -> None: ...

    def delete(self, container_id: str, force: bool = False) -> None:
        """Removes the container's state and cgroup; force kills it first if it still runs."""

    def pause(self, container_id: str) -> None: ...

    def resume(self, container_id: str) -> None: ...

    def pids(self, container_id: str) -> list[int]:
        """The host pids of every process in the container."""

    def stats(self, container_id: str) -> dict[str, Any]:
        """Usage figures in the shape of cgroups.Manager.stats() (memory, cpu, pids, oom_kill)."""

    def oom_killed(self, container_id: str) -> bool:
        """Whether the OOM killer killed a process of the container (asked at its exit)."""

    def exec(self, container_id: str, proc: dict[str, Any], opts: ExecOptions | None = None) -> int:
        """Starts the OCI process `proc` in the running container; returns its pid."""

    def update(self, container_id: str, resources: dict[str, Any]) -> None:
        """Changes the cgroup limits (OCI linux.resources) of a live container."""

    def state(self, container_id: str) -> dict[str, Any]:
        """The OCI state: ociVersion, id, status, pid, bundle, annotations."""
