"""Suite-wide host-leak check: after every test, the host must look as it did before.

The autouse ``host_watch`` fixture snapshots the host before each test and, after it,
fails the test (an error at teardown) if the test left behind any of:

- a mount that was not in our /proc/self/mountinfo before the test;
- a network namespace name in /run/netns that was not there before;
- a network link, address or route that appeared and is still there, or one the host had
  when the session started that is gone (dockerd deleting docker0 is the case in point);
- a change in the firewall (iptables-save, ip6tables-save, their -legacy twins, nft);
- a cgroup directory, in any hierarchy under /sys/fs/cgroup, whose path names a watched
  token (a container id the test used, or another token it registered);
- a process that sits in such a cgroup, or a watched pid that is still alive;
- a container state directory in a watched runtime root (and /run/runc/<id>,
  /run/sampan-runc/<id>).

Tests register what they use through the fixture (``host_watch.watch_id(cid)``,
``watch_root(path)``, ``watch_pid(pid)``); tests/runtime does so for every container id.

Several test processes share the host at once (pytest-xdist workers, several people's
runs), so a change is charged to a test only when it is the test's own:

- a mount is the test's if its mount point lies under this process's pytest base temp
  dir, under a watched root, or has a path component naming a watched token or this
  process's marker ``-<pid>-`` (the exec roots the fixtures make under /run carry it);
- a network namespace or link is the test's if its name holds a watched token or the
  marker;
- anything else (a mount elsewhere, another netns or link, an address or route, a firewall
  rule, a vanished link) cannot be told apart from another run's doing: it fails the test
  only when no other test process was running during the test. Every process using this
  fixture holds a lock on a file in /run/sampan-test-watchers while it lives, which is how
  the others see it.

Only what is the test's own is cleaned up by force (processes killed, mounts detached,
links deleted, cgroups and state removed), so one leaking test does not spoil the ones after
it and never takes away what another run still uses.

Set SAMPAN_LEAK_DEBUG=1 to see what a test's clean-up still leaves while the check waits
(up to 3 s) for it to settle.

The drop-in tests (tests/integration, marked ``dropin``) check their own daemons at module
scope instead, since a module-wide dockerd legitimately holds mounts across tests.
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from sampan.network.manager import DEFAULT_BRIDGE

_SETTLE = 3.0  # seconds a test's clean-up may take to become visible (reaping, lazy unmounts)
_RUNTIME_ROOTS = ("/run/runc", "/run/sampan-runc")
_WATCHERS = "/run/sampan-test-watchers"
_RULE_DUMPS = (("iptables-save",), ("ip6tables-save",), ("iptables-legacy-save",),
               ("ip6tables-legacy-save",), ("nft", "list", "ruleset"))
_libc = ctypes.CDLL(None, use_errno=True)
_MNT_DETACH = 2
_MARKER = f"-{os.getpid()}-"


def _unescape(s: str) -> str:
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


def _links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def _ip_lines(*argv: str) -> set[str]:
    """The lines of an `ip` listing, without the counters that tick by themselves."""
    cp = subprocess.run(["ip", *argv], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    out = set()
    for line in cp.stdout.splitlines():
        line = re.sub(r"\s+(valid_lft|preferred_lft|expires)\s+\S+", "", line.replace("\\", " "))
        out.add(" ".join(re.sub(r"^\d+:\s+", "", line).split()))
    return out


def _addresses() -> set[str]:
    """'<link> inet[6] <address/prefix> ...' of every address."""
    return _ip_lines("-o", "addr")


def _routes() -> set[str]:
    return _ip_lines("route", "show", "table", "all") | _ip_lines("-6", "route", "show", "table", "all")


def _on_link(line: str) -> str | None:
    """The link an address line ('eth0 inet ...') or route line ('... dev eth0 ...') is on."""
    words = line.split()
    if "dev" in words[:-1]:
        return words[words.index("dev") + 1]
    return words[0] if len(words) > 1 and words[1] in ("inet", "inet6") else None


def _rules() -> dict[str, str]:
    out = {}
    for argv in _RULE_DUMPS:
        if shutil.which(argv[0]):
            cp = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
            text = re.sub(r"\[\d+:\d+\]", "[]", cp.stdout)
            out[" ".join(argv)] = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    return out


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


class _Watchers:
    """This process's lock file in /run/sampan-test-watchers, and the others'."""

    def __init__(self) -> None:
        os.makedirs(_WATCHERS, exist_ok=True)
        self.own = os.path.join(_WATCHERS, str(os.getpid()))
        # locked before it gets its name, so no one ever sees it unlocked and takes it for stale
        making = os.path.join(_WATCHERS, f".{os.getpid()}")
        self.fd = os.open(making, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        os.rename(making, self.own)

    def others(self) -> set[str]:
        """The lock files another live test process holds (stale ones are removed)."""
        found = set()
        for name in os.listdir(_WATCHERS):
            path = os.path.join(_WATCHERS, name)
            if path == self.own or name.startswith("."):
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                found.add(name)
            else:
                os.unlink(path)  # its owner is gone; a file of a live owner is always locked
            finally:
                os.close(fd)
        return found

    def close(self) -> None:
        os.unlink(self.own)
        os.close(self.fd)


class _Session:
    """What the host had when this test process started, and where its temp dirs are."""

    def __init__(self, basetemp: str) -> None:
        self.basetemp = basetemp
        self.links = _links()
        self.addresses = _addresses()
        self.routes = _routes()
        self.watchers = _Watchers()


class HostWatch:
    def __init__(self, session: _Session) -> None:
        self.session = session
        self.tokens: set[str] = set()
        self.roots: set[str] = set()
        self.pids: dict[int, int | None] = {}
        self.mounts = _mounts()
        self.netns = _netns()
        self.links = _links()
        self.addresses = _addresses()
        self.routes = _routes()
        self.rules = _rules()
        self.others_at_start = session.watchers.others()

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

    # -- whose a change is -----------------------------------------------------------
    def _has_token(self, path: str) -> bool:
        parts = path.split("/")
        return any(tok in part for tok in self.tokens for part in parts)

    def _names_own(self, name: str) -> bool:
        return _MARKER in name or any(tok in name for tok in self.tokens)

    def _owns_path(self, path: str) -> bool:
        under = [self.session.basetemp, *self.roots]
        return (any(path == d or path.startswith(d.rstrip("/") + "/") for d in under)
                or self._has_token(path) or any(_MARKER in part for part in path.split("/")))

    def alone(self) -> bool:
        """No other test process ran during the test: every change on the host is its."""
        return not self.others_at_start and not self.session.watchers.others()

    # -- what is left ----------------------------------------------------------------
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

    def new_mounts(self) -> dict[str, tuple[str, str, str]]:
        return {mid: m for mid, m in _mounts().items() if mid not in self.mounts}

    def leaked_mounts(self) -> dict[str, tuple[str, str, str]]:
        """New mounts that are the test's own."""
        return {mid: m for mid, m in self.new_mounts().items() if self._owns_path(m[0])}

    def leaked_netns(self) -> set[str]:
        return {n for n in _netns() - self.netns if self._names_own(n)}

    def leaked_links(self) -> set[str]:
        return {n for n in _links() - self.links if self._names_own(n)}

    def network_changes(self, alone: bool) -> list[str]:
        """Links, addresses and routes added or removed; those on links that came and went
        after the session started are another test's business unless we were alone."""
        links_now = _links()
        out = [f"network link left: {n}" for n in sorted(self.leaked_links())]
        out += [f"network link gone: {n}" for n in sorted((self.links - links_now) & self.session.links)]
        if alone:
            out += [f"network link left: {n}" for n in sorted(links_now - self.links) if not self._names_own(n)]
            out += [f"network link gone: {n}" for n in sorted(self.links - links_now - self.session.links)]
        for what, before, now, at_start in (("address", self.addresses, _addresses(), self.session.addresses),
                                            ("route", self.routes, _routes(), self.session.routes)):
            for line in sorted(now - before):
                if alone or _on_link(line) in self.session.links or self._names_own(line):
                    out.append(f"{what} left: {line}")
            for line in sorted(before - now):
                if alone or line in at_start:
                    out.append(f"{what} gone: {line}")
        return out

    def rule_changes(self) -> list[str]:
        out = []
        for name, text in _rules().items():
            before = self.rules.get(name, "")
            if text != before:
                added = sorted(set(text.splitlines()) - set(before.splitlines()))
                removed = sorted(set(before.splitlines()) - set(text.splitlines()))
                out.append(f"firewall changed ({name}): +{added} -{removed}")
        return out

    def sampan_host_objects(self) -> list[str]:
        """sampan's fixed-name default bridge and firewall tables, new in the host's own
        namespace: every test daemon and engine keeps its networks in a namespace of its own
        (a host-network daemon runs with --bridge none --iptables=false), so whichever test
        made them outside one leaked them, whatever else ran meanwhile."""
        out = []
        if DEFAULT_BRIDGE in _links() and DEFAULT_BRIDGE not in self.links:
            out.append(f"network link left in the host's namespace: {DEFAULT_BRIDGE}")
        nft = " ".join(_RULE_DUMPS[-1])
        before = set(self.rules.get(nft, "").splitlines())
        out += [f"firewall table left in the host's namespace: {line.strip(' {')}"
                for line in _rules().get(nft, "").splitlines()
                if line.startswith(("table ip sampan", "table ip6 sampan")) and line not in before]
        return out

    def leaks(self) -> list[str]:
        alone = self.alone()
        mounts = self.new_mounts().values() if alone else self.leaked_mounts().values()
        netns = _netns() - self.netns if alone else self.leaked_netns()
        out = []
        out += [f"mount left: {mp} ({fstype} from {src})" for mp, fstype, src in mounts]
        out += [f"network namespace left: /run/netns/{n}" for n in sorted(netns)]
        out += self.network_changes(alone)
        if alone:
            out += self.rule_changes()
        else:
            out += self.sampan_host_objects()
        out += [f"cgroup left: {p}" for p in self.leaked_cgroups()]
        out += [f"process left: pid {pid} ({why})" for pid, why in self.leaked_processes().items()]
        out += [f"state left: {p}" for p in self.leaked_state()]
        return out

    # -- clean up by force (only what is the test's own) -----------------------------
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
        for name in self.leaked_links():
            subprocess.run(["ip", "link", "del", name], capture_output=True, stdin=subprocess.DEVNULL)
        for mp, _, _ in reversed(list(self.leaked_mounts().values())):
            _libc.umount2(mp.encode(), _MNT_DETACH)
        for path in sorted(self.leaked_cgroups(), key=lambda p: -p.count("/")):
            try:
                os.rmdir(path)
            except OSError:
                pass
        for path in self.leaked_state():
            shutil.rmtree(path, ignore_errors=True)


# -- parallel runs (pytest-xdist; scripts/test.sh) -----------------------------------------

# Tests that use one fixed thing of the host run on one worker, one after the other:
# path (relative to tests/) -> the name of the thing.
SHARED_HOST_RESOURCES = {
    # the cgroup root's subtree_control, and a check that kills any sampan-test-cg-* cgroup
    "runtime/cgroups": "cgroup-root",
    # the fixed /run/docker and /run/containerd (shim sockets in /run/containerd/s) and the
    # top-level cgroups the drop-in daemons' checks compare; a bridge named docker0
    "integration": "dockerd-containerd",
}
SLOW_TIMEOUT = 1200  # seconds, for tests marked slow (the default is pyproject.toml's timeout)


def _work_unit(nodeid: str) -> str:
    """What runs on one worker: a test module (its module-wide daemons are set up once), or
    every module that uses the same fixed host resource."""
    module = nodeid.split("::", 1)[0]
    rel = module.removeprefix("tests/")
    for prefix, resource in SHARED_HOST_RESOURCES.items():
        if rel == prefix or rel.startswith(prefix + "/"):
            return resource
    return module


def pytest_xdist_make_scheduler(config, log):
    """--dist loadscope with _work_unit as the scope. (xdist_group marks are no way: xdist 3.8
    renames node ids through Item._nodeid, which pytest 9.2 no longer reads.)"""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class HostResourceScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _work_unit(nodeid)

    return HostResourceScheduling(config, log)


def pytest_collection_modifyitems(items):
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT))


@pytest.fixture(scope="session")
def _host_session(tmp_path_factory):
    session = _Session(str(tmp_path_factory.getbasetemp()))
    yield session
    session.watchers.close()


@pytest.fixture(autouse=True)
def host_watch(request, _host_session):
    """Fails the test if it left mounts, network changes, cgroups, processes or state on the host."""
    watch = HostWatch(_host_session)
    if request.node.get_closest_marker("dropin"):
        yield watch
        return
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
