"""Helpers shared by the cgroups tests (markers, process state, polling)."""
from __future__ import annotations

import os
import time

import pytest

from sampan.runtime.cgroups import detect_mode
from sampan.runtime.cgroups.hierarchy import unified_mountpoint

CGROUP_ROOT = "/sys/fs/cgroup"
# Names of this test process's cgroups: other test processes (xdist workers, other runs) make
# sampan-test-cg-<their pid>-* at the same time, and each may clean up only its own. The
# "-<pid>-" part is also what the suite-wide leak check (tests/conftest.py) charges to us.
MARK = f"sampan-test-cg-{os.getpid()}-"
MODE = detect_mode(CGROUP_ROOT)
UNIFIED_MOUNT = unified_mountpoint(CGROUP_ROOT, MODE) if MODE != "v1" else None

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to manage cgroups")
needs_v1 = pytest.mark.skipif(MODE == "v2", reason="needs cgroup v1 hierarchies")
needs_cgroup2 = pytest.mark.skipif(MODE == "v1", reason="needs a cgroup2 mount")


def proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("State:"):
                return line.split()[1]
    raise AssertionError(f"no State in /proc/{pid}/status")


def wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
