"""Fixtures for the cgroups tests: unique cgroup names, gated child processes, and a check
that no test leaves one of its cgroups (named sampan-test-cg-<pid>-*, this process's own)
behind in any hierarchy."""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time

import pytest

from cgroup_testlib import CGROUP_ROOT, MARK, UNIFIED_MOUNT
from sampan.runtime.cgroups import Manager


def leftovers() -> list[str]:
    found = []
    for dirpath, dirnames, _files in os.walk(CGROUP_ROOT):
        for name in dirnames:
            if name.startswith(MARK):
                found.append(os.path.join(dirpath, name))
    return found


def _force_remove(path: str) -> None:
    for dirpath, _dirs, _files in os.walk(path, topdown=False):
        try:
            with open(os.path.join(dirpath, "cgroup.procs")) as f:
                for pid in f.read().split():
                    os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass
        for state_file, value in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
            try:
                with open(os.path.join(dirpath, state_file), "w") as f:
                    f.write(value)
            except OSError:
                pass
        for _ in range(100):
            try:
                os.rmdir(dirpath)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.02)


def _subtree_control() -> set[str]:
    if UNIFIED_MOUNT is None:
        return set()
    with open(os.path.join(UNIFIED_MOUNT, "cgroup.subtree_control")) as f:
        return set(f.read().split())


def _others_in_unified_root() -> bool:
    if UNIFIED_MOUNT is None:
        return False
    return any(entry.is_dir() and not entry.name.startswith(MARK) for entry in os.scandir(UNIFIED_MOUNT))


@pytest.fixture(autouse=True)
def no_cgroup_leftovers():
    """Fails a test that leaves one of our cgroups anywhere under /sys/fs/cgroup (after
    removing it). Controllers a test enabled in the cgroup2 root are disabled again: the
    managers leave them on by design (other containers may rely on them), the tests must not."""
    before = set(leftovers())
    enabled_before = _subtree_control()
    yield
    stray = sorted(set(leftovers()) - before, key=len, reverse=True)
    for path in stray:
        _force_remove(path)
    # Only while no cgroup but ours sits in the cgroup2 root: another process's container
    # (another test run, a daemon) may have enabled the same controller meanwhile and use it.
    if not _others_in_unified_root():
        for controller in _subtree_control() - enabled_before:
            try:
                with open(os.path.join(UNIFIED_MOUNT, "cgroup.subtree_control"), "w") as f:
                    f.write("-" + controller)
            except OSError:
                pass  # EBUSY: a cgroup made since uses it now; leave it be
    assert not stray, f"test left cgroups behind: {stray}"


@pytest.fixture
def name() -> str:
    return f"{MARK}{secrets.token_hex(4)}"


class Gated:
    """A child that waits for go() before running its command, entering the cgroups of
    `cgroup` (a manager) first thing after its fork, as a container's process does. Killed
    and reaped at teardown."""

    def __init__(self, script: str, *, python: bool = False, cgroup: Manager | None = None) -> None:
        if python:
            argv = [sys.executable, "-I", "-S", "-c", "import sys; sys.stdin.readline()\n" + script]
        else:
            argv = ["sh", "-c", "read _go; " + script]
        join = cgroup.join() if cgroup is not None else None
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                preexec_fn=(lambda: join.enter(cloned_into_v2=False)) if join is not None else None,
            )
        finally:
            if join is not None:
                join.close()
        self.pid = self.proc.pid

    def go(self) -> None:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()  # left open: communicate() closes it

    def finish(self, timeout: float = 20) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


@pytest.fixture
def spawn():
    children: list[Gated] = []

    def make(script: str, *, python: bool = False, cgroup: Manager | None = None) -> Gated:
        child = Gated(script, python=python, cgroup=cgroup)
        children.append(child)
        return child

    yield make
    for child in children:
        child.stop()


@pytest.fixture
def cleanup():
    """Managers registered here are killed and destroyed at teardown even if the test fails."""
    managers = []
    yield managers.append
    for m in managers:
        try:
            m.kill_all(signal.SIGKILL)
        except OSError:
            pass
        m.destroy()
