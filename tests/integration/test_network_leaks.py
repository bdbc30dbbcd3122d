"""Default networking leaves nothing behind (issue 8): a private sampand in a network namespace
of the test's own (a file, so that a restarted daemon comes back into the same one) plays the
host. Its state is snapshotted once the default network exists: links, IPv4 addresses and
routes (tests/network's net_state), the nftables ruleset, the sandbox files and nsfs mounts
under its exec root, and the endpoint and address records in state.db. After 200
create/start/rm cycles (some with a published port) and some `run --rm`, and after sampand is
SIGKILLed with many starts in flight, restarted and its containers removed, the snapshot must
be exactly as before.
"""
from __future__ import annotations

import importlib.util
import json
import os
import random
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from private_daemons import NSENTER, Sampand, run
from sampan.image.store import ImageStore
from sampan.network import netns as netns_files

TESTS = Path(__file__).resolve().parents[1]
IMAGE = "busybox:latest"
CYCLES = 200
IN_FLIGHT = 12  # starts running when sampand is killed
KILL_ROUNDS = 5


def _conftest_of(layer: str):
    spec = importlib.util.spec_from_file_location(f"_{layer}_conftest", TESTS / layer / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


net_state = _conftest_of("network").net_state
add_busybox = _conftest_of("engine").add_busybox


@pytest.fixture
def sampand(tmp_path):
    namespace = str(tmp_path / "daemon-netns")
    netns_files.create(namespace)
    root = str(tmp_path / "root")
    store = ImageStore(root)
    add_busybox(store, IMAGE)
    store.close()
    daemon = Sampand(root, network=namespace)
    try:
        daemon.start()
        yield daemon
    finally:
        problems = daemon.teardown()
        netns_files.remove(namespace)
    if problems:
        pytest.fail("the daemon's teardown had to clean up:\n" + "\n".join(problems), pytrace=False)


def _without_handles(value):
    """An nft -j object without its handles (a rule re-made in the same place is the same rule)."""
    if isinstance(value, dict):
        return {k: _without_handles(v) for k, v in value.items() if k != "handle"}
    if isinstance(value, list):
        return [_without_handles(v) for v in value]
    return value


def snapshot(daemon: Sampand) -> dict[str, object]:
    """What networking may change in the daemon's namespace and state (see the module's docstring)."""
    links, addresses, routes = net_state(daemon.netns)
    ruleset = json.loads(run([NSENTER, f"--net={daemon.netns}", "nft", "-j", "list", "ruleset"]).stdout)
    sandboxes = sorted(f"{dirpath}/{name}" for dirpath, dirnames, names in os.walk(daemon.exec_root)
                       if os.path.basename(dirpath) == "netns" for name in names)
    with open("/proc/self/mountinfo") as f:
        mounts = [(line.split()[4], line.split(" - ")[1].split()[0]) for line in f]
    nsfs = sorted(point for point, fstype in mounts if fstype == "nsfs" and point.startswith(daemon.exec_root + "/"))
    db = sqlite3.connect(f"file:{daemon.root}/state.db?mode=ro", uri=True)
    try:
        endpoints = sorted(db.execute("SELECT container_id, network_id FROM network_endpoints"))
        held = sorted(db.execute("SELECT network_id, address, container_id FROM network_addresses"))
        networks = sorted(db.execute("SELECT name, bridge, subnet FROM networks"))
    finally:
        db.close()
    return {"links": links, "addresses": addresses, "routes": routes,
            "nftables": [_without_handles(item) for item in ruleset["nftables"] if "metainfo" not in item],
            "sandbox files": sandboxes, "nsfs mounts": nsfs, "endpoint records": endpoints,
            "address records": held, "networks": networks}


def settled_snapshot(daemon: Sampand, within: float = 5.0) -> dict[str, object]:
    """The snapshot of a daemon without containers, once the veths the kernel removes in the
    background with their namespaces (docs/NETWORK.md: remove_sandbox leaves them to it) are
    gone, or after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        now = snapshot(daemon)
        if not any(link.startswith("veth") for link in now["links"].splitlines()) or time.monotonic() > deadline:
            return now
        time.sleep(0.05)


def differences(before: dict[str, object], after: dict[str, object]) -> str:
    return "\n".join(f"{key}:\n  before: {before[key]!r}\n  after:  {after[key]!r}"
                     for key in before if before[key] != after[key])


def create(daemon: Sampand, cmd: list[str], publish: bool = False) -> str:
    """A container on the default network; with publish, its port 80 on a host port the daemon picks."""
    body = {"Image": IMAGE, "Cmd": cmd}
    if publish:
        body.update(ExposedPorts={"80/tcp": {}}, HostConfig={"PortBindings": {"80/tcp": [{"HostPort": ""}]}})
    return daemon.client().post("/containers/create", body)["Id"]


def default_network_ready(daemon: Sampand) -> dict[str, object]:
    """One `run --rm` (the default network is made on first use), then the snapshot."""
    daemon.sampan("run", "--rm", IMAGE, "true", check=True)
    before = settled_snapshot(daemon)
    assert "sampan0" in before["links"].splitlines(), before["links"]
    assert [name for name, _, _ in before["networks"]] == ["bridge"], before["networks"]
    return before


@pytest.mark.slow
def test_200_cycles_and_run_rm_leave_the_namespace_as_before(sampand):
    before = default_network_ready(sampand)
    client = sampand.client()
    for i in range(CYCLES):
        # exits at once (its network torn down at exit), runs until rm -f, or is stopped first
        cid = create(sampand, ["true"] if i % 3 == 0 else ["sleep", "60"], publish=i % 4 == 0)
        client.post(f"/containers/{cid}/start")
        if i % 3 == 1:
            settings = client.get(f"/containers/{cid}/json")["NetworkSettings"]
            assert settings["Networks"]["bridge"]["IPAddress"], settings
            assert bool(settings["Ports"].get("80/tcp")) == (i % 4 == 0), settings["Ports"]
        elif i % 3 == 2:
            client.post(f"/containers/{cid}/stop", t=0)
        client.delete(f"/containers/{cid}", force=1)
    for _ in range(10):
        sampand.sampan("run", "--rm", IMAGE, "true", check=True)
    after = settled_snapshot(sampand)
    assert after == before, f"after {CYCLES} cycles and 10 run --rm:\n" + differences(before, after)


@pytest.mark.slow
def test_sigkill_with_starts_in_flight_then_restart_and_rm_leave_the_namespace_as_before(sampand):
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    before = default_network_ready(sampand)
    for round_ in range(KILL_ROUNDS):
        cids = [create(sampand, ["sleep", "60"], publish=i % 2 == 0) for i in range(IN_FLIGHT)]
        started: list[str] = []

        def start(cid: str) -> None:
            try:
                sampand.client().post(f"/containers/{cid}/start")
                started.append(cid)
            except Exception:  # noqa: BLE001 - the daemon is killed under it: the point of the test
                pass

        threads = [threading.Thread(target=start, args=(cid,)) for cid in cids]
        for t in threads:
            t.start()
        delay = rng.uniform(0.05, 1.2)  # 12 starts take ~0.2 to ~1.8 s here
        time.sleep(delay)
        sampand.kill(signal.SIGKILL)
        for t in threads:
            t.join(30)
        sampand.start()
        removed = sampand.remove_containers()
        assert sorted(removed) == sorted(cids)
        after = settled_snapshot(sampand)
        assert after == before, (f"round {round_} (seed {seed}): SIGKILL {delay:.3f}s after {IN_FLIGHT} starts "
                                 f"began, {len(started)} of them done; after restart and rm -f:\n"
                                 + differences(before, after))
