"""What a private daemon (tests/private_daemons.py) must leave as it found it, and the
clean-up of what it leaves anyway: top-level cgroups and the fixed /run paths dockerd and
containerd use; processes, mounts and cgroups under a daemon's own directories and cgroup
parent.

The host's links, addresses, firewall and forwarding sysctls are not compared here: every
private daemon has a network namespace of its own (or one shared with another private
daemon), out of which it cannot touch them, while other test sessions on the host do
change them meanwhile (test_host_network.py's docker0 comes and goes), which a comparison
over a daemon's lifetime would charge to it. tests/integration/test_host_network.py checks
that the namespace holds, for dockerd and containerd; outside tests/integration the
suite-wide host_watch (tests/conftest.py) checks the network per test, telling its own
changes from other sessions'.
"""

from __future__ import annotations

import ctypes
import os
import re
import time
from pathlib import Path


def _unescape(s: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def _mountinfo():
    """(mount point, fs type) of every mount in our mount namespace, in mount order."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            out.append((_unescape(left.split()[4]), right.split()[0]))
    return out


def _cgroup_roots():
    return sorted({mp for mp, fstype in _mountinfo() if fstype in ("cgroup", "cgroup2")})


def _top_cgroups():
    top = set()
    for root in _cgroup_roots():
        try:
            top |= {f"{root}/{e.name}" for e in os.scandir(root) if e.is_dir(follow_symlinks=False)}
        except OSError:
            pass
    return top


_RUN_DIRS = ["/run/docker", "/run/containerd"]
_DEFAULT_CGROUPS = {"docker", "containerd", "default", "moby"}


def _walk(top):
    found = set()
    for dirpath, dirnames, filenames in os.walk(top):
        found.add(dirpath)
        found |= {os.path.join(dirpath, n) for n in dirnames + filenames}
    return found


class HostState:
    """What a drop-in test must not change: top-level cgroups, and the fixed /run paths
    dockerd and containerd use."""

    def __init__(self):
        self.cgroups = _top_cgroups()
        self.run_paths = set().union(*(_walk(d) for d in _RUN_DIRS))

    def changes_since(self, before: "HostState", cgroup_parent: str) -> list[str]:
        out = []
        # other tests (other private daemons too) make top-level cgroups meanwhile: ours are the
        # daemon's (its cgroup parent) and those dockerd and containerd make by default
        own = cgroup_parent.strip("/")
        ours = {c for c in self.cgroups - before.cgroups if os.path.basename(c) in _DEFAULT_CGROUPS | {own}}
        if ours:
            out.append(f"new top-level cgroups: {sorted(ours)}")
        return out


# ---------------------------------------------------------------- clean-up helpers


def _pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]


def _cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def procs_touching(tmpdir: str, cgroup_parent: str):
    """Processes whose command line or cwd names tmpdir, or that sit in cgroup_parent."""
    found = {}
    for pid in _pids():
        cmd = _cmdline(pid)
        why = None
        if tmpdir in cmd:
            why = "cmdline"
        else:
            try:
                if os.readlink(f"/proc/{pid}/cwd").startswith(tmpdir):
                    why = "cwd"
            except OSError:
                pass
        if why is None:
            try:
                for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
                    path = line.split(":", 2)[2]
                    if path == cgroup_parent or path.startswith(cgroup_parent + "/"):
                        why = f"cgroup {path}"
                        break
            except (OSError, IndexError):
                pass
        if why:
            found[pid] = f"pid {pid} ({why}): {cmd}"
    return found


def alive(pid):
    try:
        st = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return st.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pids, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return not any(alive(p) for p in pids)


_libc = ctypes.CDLL(None, use_errno=True)
MNT_DETACH = 2


def mounts_under(tmpdir: str):
    return [mp for mp, _ in _mountinfo() if mp == tmpdir or mp.startswith(tmpdir + "/")]


def detach_mounts(tmpdir: str):
    for mp in reversed(mounts_under(tmpdir)):
        _libc.umount2(mp.encode(), MNT_DETACH)


def cgroup_leftovers(cgroup_parent: str):
    """Directories below cgroup_parent in every hierarchy (the parent itself excluded)."""
    left = []
    for root in _cgroup_roots():
        top = root + cgroup_parent
        if os.path.isdir(top):
            for dirpath, dirnames, _ in os.walk(top):
                left += [os.path.join(dirpath, d) for d in dirnames]
    return left


def remove_cgroups(cgroup_parent: str):
    for root in _cgroup_roots():
        top = root + cgroup_parent
        if not os.path.isdir(top):
            continue
        for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass


def restore_run_dirs(before: HostState) -> list[str]:
    """Removes what appeared under /run/docker and /run/containerd while we ran: the
    empty directories dockerd and containerd always create are expected; files are not."""
    problems = []
    new = set().union(*(_walk(d) for d in _RUN_DIRS)) - before.run_paths
    for path in sorted(new, key=lambda p: -p.count("/")):
        if os.path.isdir(path) and not os.path.islink(path):
            try:
                os.rmdir(path)
            except OSError as e:
                problems.append(f"cannot remove {path}: {e}")
        else:
            problems.append(f"left behind: {path}")
            try:
                os.unlink(path)
            except OSError:
                pass
    return problems
