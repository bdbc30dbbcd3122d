"""Suite-wide host-leak check: after every test, the host must look as it did before.

The autouse ``host_watch`` fixture snapshots the host before each test and, after it,
fails the test (an error at teardown) if the test left behind any of:

- a mount that was not in our /proc/self/mountinfo before the test;
- a network namespace name in /run/netns that was not there before;
- a cgroup directory, in any hierarchy under /sys/fs/cgroup, whose path names a watched
  token (a container id the test used, or another token it registered);
- a process that sits in such a cgroup, or a watched pid that is still alive;
- a container state directory in a watched runtime root (and /run/runc/<id>,
  /run/sampan-runc/<id>).

Tests register what they use through the fixture (``host_watch.watch_id(cid)``,
``watch_root(path)``, ``watch_pid(pid)``); tests/runtime does so for every container id.
Whatever leaked is then cleaned up by force (processes killed, mounts detached, cgroups
and state removed) so one leaking test does not spoil the ones after it.

Set SAMPAN_LEAK_DEBUG=1 to see what a test's clean-up still leaves while the check waits
(up to 3 s) for it to settle.

The drop-in tests (tests/integration, marked ``dropin``) check their own daemons at module
scope instead, since a module-wide dockerd legitimately holds mounts across tests.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import time

import pytest

_SETTLE = 3.0  # seconds a test's clean-up may take to become visible (reaping, lazy unmounts)
_RUNTIME_ROOTS = ("/run/runc", "/run/sampan-runc")
_libc = ctypes.CDLL(None, use_errno=True)
_MNT_DETACH = 2


def _unescape(s: str) -> str:
    import re
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def _mounts() -> dict[str, tuple[str, str, str]]:
    """mount id -> (mount point, fs type, source) of our mount namespace."""
    out = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            out[fields[0]] = (_unescape(fields[4]), rfields[0], rfields[1] if len(rfields) > 1 else "")
    return out


def _cgroup_mountpoints() -> list[str]:
    return sorted({mp for mp, fstype, _ in _mounts().values() if fstype in ("cgroup", "cgroup2")})


def _netns() -> set[str]:
    try:
        return set(os.listdir("/run/netns"))
    except OSError:
        return set()


def _start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


class HostWatch:
    def __init__(self) -> None:
        self.tokens: set[str] = set()
        self.roots: set[str] = set()
        self.pids: dict[int, int | None] = {}
        self.mounts = _mounts()
        self.netns = _netns()

    # -- what the test registers -------------------------------------------------
    def watch_id(self, token: str) -> None:
        """A container id (or another distinctive token) whose cgroups, processes and
        state must be gone after the test."""
        self.tokens.add(token)

    def watch_root(self, path: str) -> None:
        """A runtime --root whose container directories must be gone after the test."""
        self.roots.add(str(path))

    def watch_pid(self, pid: int) -> None:
        if pid > 0 and pid not in self.pids:
            self.pids[pid] = _start_time(pid)

    # -- what is left ----------------------------------------------------------------
    def _has_token(self, path: str) -> bool:
        parts = path.split("/")
        return any(tok in part for tok in self.tokens for part in parts)

    def leaked_cgroups(self) -> list[str]:
        if not self.tokens:
            return []
        found = []
        for top in _cgroup_mountpoints():
            for dirpath, dirnames, _ in os.walk(top):
                rel = dirpath[len(top):]
                if rel and self._has_token(rel):
                    found.append(dirpath)
        return found

    def leaked_processes(self) -> dict[int, str]:
        found: dict[int, str] = {}
        for pid, start in self.pids.items():
            if start is not None and _start_time(pid) == start:
                found[pid] = "a watched container pid"
        if self.tokens:
            for name in os.listdir("/proc"):
                if not name.isdigit() or int(name) in found or int(name) == os.getpid():
                    continue
                try:
                    with open(f"/proc/{name}/cgroup") as f:
                        text = f.read()
                except OSError:
                    continue
                for line in text.splitlines():
                    path = line.split(":", 2)[-1]
                    if self._has_token(path) and _start_time(int(name)) is not None:
                        found[int(name)] = f"in cgroup {line}"
                        break
        for pid in list(found):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    found[pid] += ": " + f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                pass
        return found

    def leaked_state(self) -> list[str]:
        found = []
        for root in self.roots:
            try:
                found += [os.path.join(root, n) for n in os.listdir(root)
                          if os.path.isdir(os.path.join(root, n))]
            except FileNotFoundError:
                pass
        for root in _RUNTIME_ROOTS:
            found += [os.path.join(root, t) for t in self.tokens if os.path.lexists(os.path.join(root, t))]
        return found

    def leaked_mounts(self) -> dict[str, tuple[str, str, str]]:
        return {mid: m for mid, m in _mounts().items() if mid not in self.mounts}

    def leaked_netns(self) -> set[str]:
        return _netns() - self.netns

    def leaks(self) -> list[str]:
        out = []
        out += [f"mount left: {mp} ({fstype} from {src})" for mp, fstype, src in self.leaked_mounts().values()]
        out += [f"network namespace left: /run/netns/{n}" for n in sorted(self.leaked_netns())]
        out += [f"cgroup left: {p}" for p in self.leaked_cgroups()]
        out += [f"process left: pid {pid} ({why})" for pid, why in self.leaked_processes().items()]
        out += [f"state left: {p}" for p in self.leaked_state()]
        return out

    # -- clean up by force ---------------------------------------------------------------
    def clean(self) -> None:
        procs = self.leaked_processes()
        for pid in procs:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_start_time(p) is not None for p in procs):
            for p in procs:
                try:
                    os.waitpid(p, os.WNOHANG)
                except ChildProcessError:
                    pass
            time.sleep(0.02)
        for name in self.leaked_netns():
            _libc.umount2(f"/run/netns/{name}".encode(), _MNT_DETACH)
            try:
                os.unlink(f"/run/netns/{name}")
            except OSError:
                pass
        for mp, _, _ in reversed(list(self.leaked_mounts().values())):
            _libc.umount2(mp.encode(), _MNT_DETACH)
        for path in sorted(self.leaked_cgroups(), key=lambda p: -p.count("/")):
            try:
                os.rmdir(path)
            except OSError:
                pass
        for path in self.leaked_state():
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def host_watch(request):
    """Fails the test if it left mounts, cgroups, processes or state on the host."""
    if request.node.get_closest_marker("dropin"):
        yield HostWatch()
        return
    watch = HostWatch()
    yield watch
    deadline = time.monotonic() + _SETTLE
    leaks = watch.leaks()
    while leaks and time.monotonic() < deadline:
        if os.environ.get("SAMPAN_LEAK_DEBUG"):
            print(f"settling {time.monotonic() - deadline + _SETTLE:.2f}s: {leaks}")
        time.sleep(0.05)
        leaks = watch.leaks()
    if leaks:
        watch.clean()
        pytest.fail("the test left the host changed:\n  " + "\n  ".join(leaks), pytrace=False)
