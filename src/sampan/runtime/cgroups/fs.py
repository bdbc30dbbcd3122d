"""File primitives for cgroup filesystems: reads, writes whose errors name file and value, dir trees."""
from __future__ import annotations

import errno
import os
import time

TYPE_CHECKING = False  # typing costs ~13 ms to import; this module is on the container start path
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

# A planned write: (file name, value). Each value goes to the kernel in one write(2),
# because cgroup files parse one command per write.
Plan = list[tuple[str, str]]

# rmdir of a cgroup whose last task is still exiting fails with EBUSY for a few ms.
_RMDIR_DELAYS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64)


def read(dirpath: str, name: str) -> str:
    with open(os.path.join(dirpath, name)) as f:
        return f.read().strip()


def read_keyed(dirpath: str, name: str) -> dict[str, int]:
    """Parse a flat-keyed file ("key value" lines) such as memory.stat or cpu.stat."""
    out: dict[str, int] = {}
    for line in read(dirpath, name).splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def write(dirpath: str, name: str, value: str) -> None:
    path = os.path.join(dirpath, name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise OSError(e.errno, f"cgroup: write {name}={value}: {os.strerror(e.errno)}", path) from None


def missing_file(dirpath: str, name: str, value: str, controller: str) -> OSError:
    """The error for a write to a file the cgroup's controller does not offer on this host (a
    hugepage size it lacks, blkio.weight without a weight-based I/O scheduler)."""
    return OSError(errno.ENOENT, f"cgroup: cannot set {name}={value}: the {controller} controller has no {name} here",
                   os.path.join(dirpath, name))


def write_all(plan: Plan, locate: Callable[[str, str], str]) -> None:
    """Carry out a plan; `locate(name, value)` gives the directory each file lives in."""
    for name, value in plan:
        write(locate(name, value), name, value)


class Files:
    """Read access to a cgroup's current values, for planners whose writes depend on them."""

    def __init__(self, locate: Callable[[str], str]) -> None:
        self._locate = locate

    def read(self, name: str) -> str:
        return read(self._locate(name), name)

    def exists(self, name: str) -> bool:
        try:
            return os.path.exists(os.path.join(self._locate(name), name))
        except ValueError:
            return False


def make_dirs(path: str, created: list[str], attempts: int = 5) -> None:
    """mkdir `path` and its missing ancestors; record each ancestor made in `created` as it goes,
    so a failure halfway still leaves a complete record for destroy(). An ancestor another
    container's destroy removes meanwhile (it made it, and found it empty) is made again."""
    missing = []
    p = path
    while not os.path.isdir(p):
        missing.append(p)
        p = os.path.dirname(p)
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o755)
        except FileExistsError:
            continue
        except FileNotFoundError:
            if attempts <= 1:
                raise OSError(errno.ENOENT, "cgroup: mkdir: its parent keeps being removed", d) from None
            make_dirs(path, created, attempts - 1)
            return
        except OSError as e:
            raise OSError(e.errno, f"cgroup: mkdir: {os.strerror(e.errno)}", d) from None
        if d != path:
            created.append(d)


def remove_tree(path: str) -> None:
    """rmdir a cgroup and its descendants, deepest first; a missing cgroup is fine."""
    try:
        os.rmdir(path)  # the usual case, a cgroup without children: no listing of its files
        return
    except FileNotFoundError:
        return
    except OSError as e:
        if e.errno not in (errno.EBUSY, errno.ENOTEMPTY):  # children or tasks: below
            raise OSError(e.errno, f"cgroup: rmdir: {os.strerror(e.errno)}", path) from None
    for dirpath, _dirs, _files in os.walk(path, topdown=False):
        _rmdir_retrying(dirpath)


def _rmdir_retrying(path: str) -> None:
    for delay in (*_RMDIR_DELAYS, None):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or delay is None:
                raise OSError(e.errno, f"cgroup: rmdir: {os.strerror(e.errno)}", path) from None
        time.sleep(delay)


def remove_if_unused(paths: Iterable[str]) -> None:
    """rmdir ancestors we created, deepest first, unless something else now lives in them."""
    for path in sorted(set(paths), key=lambda p: p.count("/"), reverse=True):
        try:
            os.rmdir(path)
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.EBUSY, errno.ENOTEMPTY):
                raise OSError(e.errno, f"cgroup: rmdir: {os.strerror(e.errno)}", path) from None


def procs(path: str) -> list[int]:
    """Every pid in a cgroup and its descendants; an absent cgroup has none."""
    found: list[int] = []
    for dirpath, _dirs, _files in os.walk(path):
        try:
            text = read(dirpath, "cgroup.procs")
        except FileNotFoundError:
            continue
        found.extend(int(line) for line in text.split())
    return found


def wait_for(done: Callable[[], bool], timeout: float) -> bool:
    """Poll `done` with a gently growing interval; True if it held before `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    return True
