"""Drop-in fixtures: a private dockerd and a private containerd that use the OCI runtime
under test, and a check that each leaves the host as it found it.

The runtime binary is ``$SAMPAN_TEST_RUNTIME`` (default /usr/local/bin/sampan-runc);
``SAMPAN_TEST_RUNTIME=/usr/sbin/runc`` runs the same tests against runc. The daemons are
tests/private_daemons.py's: each in its own temporary directory (data, state, sockets), its
own network namespace, its own cgroup parent and its own containerd namespace, never
touching the host's links or firewall, torn down at the end of its module: daemon stopped,
stray processes killed, mounts detached, cgroups and directories removed. Anything that had
to be cleaned up by force fails the module.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import private_daemons
from private_daemons import (CONTAINERD, CTR, DOCKER_CLI, DOCKERD, RUNTIME, Containerd, Dockerd, PrivateDaemon,
                             daemon_fixture)


def pytest_configure(config):
    config.addinivalue_line("markers", "dropin: runs a real dockerd/containerd against the runtime under test")


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.dropin)


def _require(*tools):
    if os.geteuid() != 0:
        pytest.skip("drop-in tests need root")
    for name, path in tools:
        if not path:
            pytest.skip(f"{name} not installed")
    if not os.access(RUNTIME, os.X_OK):
        pytest.fail(f"runtime under test {RUNTIME} is not an executable (set SAMPAN_TEST_RUNTIME)")


@pytest.fixture(scope="session")
def busybox_rootfs() -> Path:
    return private_daemons.busybox_rootfs()


@pytest.fixture(scope="module")
def dockerd(busybox_rootfs):
    _require(("dockerd", DOCKERD), ("docker CLI", DOCKER_CLI))
    yield from daemon_fixture(Dockerd(busybox_rootfs))


@pytest.fixture(scope="module")
def containerd(busybox_rootfs):
    _require(("containerd", CONTAINERD), ("ctr", CTR))
    yield from daemon_fixture(Containerd(busybox_rootfs))


@pytest.fixture
def new_private_daemon(busybox_rootfs):
    """kind ("dockerd" or "containerd") -> a private daemon of that kind, not started yet."""
    def make(kind: str) -> PrivateDaemon:
        if kind == "dockerd":
            _require(("dockerd", DOCKERD), ("docker CLI", DOCKER_CLI))
            return Dockerd(busybox_rootfs)
        _require(("containerd", CONTAINERD), ("ctr", CTR))
        return Containerd(busybox_rootfs)
    return make
