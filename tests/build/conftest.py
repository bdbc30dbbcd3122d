"""Fixtures of the build tests that need daemons: a private dockerd (Docker's legacy builder,
the reference) and a private sampand, each module's own, both with the same busybox image.

They are the harness's daemons (tests/private_daemons.py), started as tests/integration and
tests/api start theirs: the dockerd in its own directories and network namespace, torn down
with a check that the host is as it was; the sampand on new roots in its own namespace,
every container a test made force-removed after it. ``busybox:local`` is dockerd's image
(`docker import` of the busybox tree) loaded into sampand with `docker save | sampan load`,
so both engines build on one image ID and their results can be compared byte for byte.
Tests that need neither daemon (the parser, context and copy tests) use tmp_path only.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from imagefs import BASE_IMAGE
from private_daemons import DOCKER_CLI, Dockerd, Sampand, busybox_rootfs, daemon_fixture

HERE = Path(__file__).resolve().parent


def _conftest(layer: str):
    """Another test layer's conftest as a module (pytest imports each as `conftest`)."""
    spec = importlib.util.spec_from_file_location(f"_{layer}_conftest", HERE.parent / layer / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_integration, _api = _conftest("integration"), _conftest("api")


@pytest.fixture(scope="module")
def dockerd():
    _integration._require(("dockerd", _integration.DOCKERD), ("docker CLI", DOCKER_CLI))
    yield from daemon_fixture(Dockerd(busybox_rootfs()))


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, dockerd) -> Sampand:
    """The module's sampand, with dockerd's busybox:local (and tests/api's busybox:latest)."""
    sampand = _api.start_daemon(tmp_path_factory)
    try:
        archive = os.path.join(dockerd.tmp, "base.tar")
        dockerd.docker("save", "-o", archive, BASE_IMAGE)
        sampand.sampan("load", "-q", "-i", archive, check=True)
        os.unlink(archive)
    except BaseException:
        _api.stop_daemon(sampand)
        raise
    yield sampand
    _api.stop_daemon(sampand)


# the module's daemon for one test: every container the test made force-removed and watched
sampand = _api.sampand


@pytest.fixture(scope="module")
def host_network_daemon(tmp_path_factory) -> Sampand:
    """A sampand on the host's network namespace, for builds whose RUN steps reach the
    outside (a private namespace has no way out): it has no default bridge and leaves the
    firewall alone (start_daemon's --bridge none --iptables=false), so its builds run with
    --network host and the host's links and rules stay exactly as they were."""
    sampand = _api.start_daemon(tmp_path_factory, network="host")
    yield sampand
    _api.stop_daemon(sampand)
