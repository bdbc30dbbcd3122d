"""The supervisor: one thread, one selector, every container's stdio.

Memory per container is a Proc object, two or three fds and a log fd: output is read in
64 KiB chunks and written straight to the log; attachers get it through bounded buffers
(when one is full the container's output is paused until it drains, so nothing is lost and
nothing grows without bound). No thread (a single-threaded process gets clone3 CLONE_INTO_CGROUP:
its inits join their cgroups with no RCU grace period), no asyncio.

The parts: loop.py (event loop, socket, requests), streams.py (output, stdin, attach),
exits.py (reaping, exit records, events), containers.py (create .. delete), execs.py (exec).
Protocol: docs/ENGINE.md "Supervisor protocol".
"""
from __future__ import annotations

from .execs import Execs
from .loop import VERSION

__all__ = ["VERSION", "Supervisor", "main"]


class Supervisor(Execs):
    """Every part of the supervisor on one loop (each part a class over the one before)."""


def _preload_runtime() -> None:
    """Import now what every container init would otherwise import after its fork (the root
    filesystem code, the console, seccomp with libseccomp open): the supervisor's forks start
    warm, and the inits only run."""
    from ..linux import caps
    from ..runtime import console, mountopts, rootfs  # noqa: F401
    from ..runtime import seccomp
    caps.last_cap()
    try:
        seccomp.prepare()
    except OSError:
        pass  # no libseccomp: containers with a profile fail at create, as before


def main(root: str, exec_root: str) -> int:
    _preload_runtime()
    sup = Supervisor(root, exec_root)
    sup.serve()
    return 0
