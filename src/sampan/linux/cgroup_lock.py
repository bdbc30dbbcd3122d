"""Hide the cost of the first cgroup migration behind start-up work.

Moving a task between cgroups takes the kernel's global cgroup_threadgroup_rwsem for
writing; when no writer held it lately that waits a full RCU grace period (8-16 ms here,
a third of a container start), and fork() waits behind it too. Once a writer has been
through, the lock stays in its fast state for another grace period. So, as the runtime
starts, a thread re-writes our own pid into our own cgroup (a no-op move) while the main
thread loads modules and reads the config; the forks and the container's real move that
follow find the lock warm.
"""
from __future__ import annotations

import _thread
import os


def _own_procs_file() -> str | None:
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if not controllers:
                for base in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
                    candidate = f"{base}{path.rstrip('/')}/cgroup.procs"
                    if os.path.exists(candidate):
                        return candidate
                continue
            name = controllers.split(",")[0].removeprefix("name=")
            candidate = f"/sys/fs/cgroup/{name}{path.rstrip('/')}/cgroup.procs"
            if os.path.exists(candidate):
                return candidate
    return None


def _rewrite_own_pid() -> None:
    try:
        path = _own_procs_file()
        if path is None:
            return
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, str(os.getpid()).encode())
        finally:
            os.close(fd)
    except (OSError, ValueError):
        pass  # only an optimisation


def warm_migration_lock() -> None:
    _thread.start_new_thread(_rewrite_own_pid, ())
