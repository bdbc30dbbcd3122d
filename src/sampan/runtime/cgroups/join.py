"""How a freshly forked container process puts itself into its cgroups, with no RCU grace period.

Moving a process by writing its pid to cgroup.procs takes the kernel's global
cgroup_threadgroup_rwsem for writing; the first writer after a quiet while waits an RCU
grace period (5-15 ms here) with cgroup_mutex held, so every cgroup operation of every
runtime on the host queues behind it. Two moves take neither:

- cgroup v1: a thread writing "0" (itself) to a hierarchy's `tasks` file; the process is
  fresh from a fork of one thread, so that moves all of it;
- cgroup2: none (cgroup.threads moves only within a threaded subtree), but a child cloned
  into its directory (linux/clone.py) is never moved. Where that clone cannot be had, the
  process writes "0" to cgroup.procs and may wait the grace period.

The parent opens the files before the fork, where it can report what is wrong with one line,
and the child writes to them first thing, before it changes namespaces: what it then does and
forks is accounted to the container.
"""
from __future__ import annotations

import os


class Join:
    """Open handles on a container's cgroups: v1 `tasks` files and the cgroup2 directory."""

    def __init__(self, v1_dirs: list[str], v2_dir: str | None) -> None:
        self._tasks: list[tuple[str, int]] = []
        self.v2_dir_fd: int | None = None
        self._v2_dir = v2_dir
        try:
            for d in v1_dirs:
                self._tasks.append((d, _open(os.path.join(d, "tasks"), os.O_WRONLY)))
            if v2_dir is not None:
                self.v2_dir_fd = _open(v2_dir, os.O_RDONLY | os.O_DIRECTORY)
        except BaseException:
            self.close()
            raise

    def enter(self, cloned_into_v2: bool) -> None:
        """In the new process: join each v1 hierarchy, and the cgroup2 directory unless the
        process was cloned into it. Closes the handles."""
        try:
            for d, fd in self._tasks:
                _write_self(fd, os.path.join(d, "tasks"))
            if self._v2_dir is not None and not cloned_into_v2:
                procs = os.path.join(self._v2_dir, "cgroup.procs")
                fd = _open(procs, os.O_WRONLY)
                try:
                    _write_self(fd, procs)
                finally:
                    os.close(fd)
        finally:
            self.close()

    def close(self) -> None:
        for _, fd in self._tasks:
            os.close(fd)
        self._tasks = []
        if self.v2_dir_fd is not None:
            os.close(self.v2_dir_fd)
            self.v2_dir_fd = None


def _open(path: str, flags: int) -> int:
    try:
        return os.open(path, flags | os.O_CLOEXEC)
    except OSError as e:
        raise OSError(e.errno, f"cgroup: open {path}: {e.strerror}") from None


def _write_self(fd: int, path: str) -> None:
    try:
        os.write(fd, b"0")
    except OSError as e:
        raise OSError(e.errno, f"cgroup: join {path}: {e.strerror}") from None
