"""Hide the cost of cgroup migrations behind start-up work.

Moving a task between cgroups takes cgroup_mutex and the kernel's global
cgroup_threadgroup_rwsem for writing; when no writer held the rwsem lately, that waits a
full RCU grace period (8-16 ms here, a third of a container start) and every cgroup
operation queues behind it. Once a writer has been through, the rwsem stays in its fast
state for another grace period, and any writer within that window renews it.

So a thread re-writes our own pid into our own cgroup (a no-op move): the first write pays
the grace period while other work goes on; later writes every few milliseconds keep the
rwsem warm for the migrations that follow. (The runtime's own forks need none: a container's
process enters its cgroups without a migration of this kind, runtime/cgroups/join.py; the
warmer serves a caller whose threads keep its forks from cloning into a cgroup.)
"""
from __future__ import annotations

import _thread
import os
import time

_RENEW_EVERY = 0.003
_GIVE_UP_AFTER = 0.25


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


class MigrationLockWarmer:
    def __init__(self, give_up_after: float = _GIVE_UP_AFTER) -> None:
        self._stopped = False
        self._give_up_after = give_up_after
        # Returns once the thread is about to make its first write. Without waiting, the new
        # thread only gets the GIL when the interpreter forces a switch (5 ms later) or the
        # main thread blocks, which a start path loading modules hardly does: the grace
        # period would start milliseconds late and end after the cgroups are wanted.
        self._writing = _thread.allocate_lock()
        self._writing.acquire()
        _thread.start_new_thread(self._run, ())
        self._writing.acquire()

    def stop(self) -> None:
        self._stopped = True

    def _run(self) -> None:
        fd = -1
        try:
            path = _own_procs_file()
            if path is not None:
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except (OSError, ValueError):
            pass  # only an optimisation
        finally:
            self._writing.release()
        if fd < 0:
            return
        pid = str(os.getpid()).encode()
        deadline = time.monotonic() + self._give_up_after
        try:
            while not self._stopped and time.monotonic() < deadline:
                os.write(fd, pid)
                time.sleep(_RENEW_EVERY)
        except OSError:
            pass  # only an optimisation
        finally:
            os.close(fd)
