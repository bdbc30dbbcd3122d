"""A real sampand on temporary roots, a busybox image in its store, and clean-up of every
container a test made (so the suite-wide leak check sees nothing left)."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from private_daemons import DOCKER_CLI, Sampand

REPO = Path(__file__).resolve().parents[2]
DOCKER = DOCKER_CLI  # tests/engine/test_runtimes.py runs it against a daemon of start_daemon's


def _add_busybox():
    spec = importlib.util.spec_from_file_location("_engine_conftest", REPO / "tests" / "engine" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.add_busybox


def start_daemon(tmp_path_factory, args: tuple[str, ...] = (), network: str = "own") -> Sampand:
    """A sampand on new roots with busybox in its store; end it with stop_daemon. Its network
    namespace is its own (other tests add and remove host links meanwhile) unless ``network``
    is "host" (to reach servers of the host's, such as a test registry): then it has no default
    bridge and leaves the firewall alone (``--bridge none --iptables=false``), so it never
    changes the host's network."""
    root = str(tmp_path_factory.mktemp("sampand") / "root")
    from sampan.image.store import ImageStore
    store = ImageStore(root)
    _add_busybox()(store)
    store.close()
    if network == "host":
        args = (*args, "--bridge", "none", "--iptables=false")
    d = Sampand(root, args, network=network)
    try:
        d.start()
    except BaseException:
        d.teardown()
        raise
    return d


def stop_daemon(d: Sampand) -> None:
    # what a test leaves is its own host_watch's to report; this cleans up the rest
    d.teardown()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = start_daemon(tmp_path_factory)
    yield d
    stop_daemon(d)


def _remove_all(d: Sampand) -> list[str]:
    return d.remove_containers()


@pytest.fixture
def sampand(daemon, host_watch):
    """The module's daemon; every container a test made is force-removed (and watched)."""
    host_watch.watch_root(os.path.join(daemon.exec_root, "runtime"))
    # restarted only when a test stopped it: a daemon merely slow to answer (a loaded host)
    # must not get a second one started beside it
    if not daemon.running():
        daemon.start()
    yield daemon
    if not daemon.running():
        daemon.start()
    for cid in _remove_all(daemon):
        host_watch.watch_id(cid)
