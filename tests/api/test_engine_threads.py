"""Exits come as events: sampand keeps no thread per running container. With 200 containers
running its thread count is what it is with one (give or take a few pool threads)."""
from __future__ import annotations

import os
import time

import pytest

CONTAINERS = 200
SLACK = 6  # threads that may come and go: the exit pool, the API's workers, a restart timer


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _run(client, name: str) -> str:
    body = {"Image": "busybox", "Cmd": ["sleep", "1000"], "HostConfig": {"NetworkMode": "none"}}
    cid = client.post("/containers/create", body, name=name)["Id"]
    client.post(f"/containers/{cid}/start")
    return cid


@pytest.mark.slow  # 200 containers: 20 s on a 2-core VM, far more on a slow CI machine
def test_thread_count_stays_flat_with_200_running_containers(sampand):
    client = sampand.client()
    pid = sampand.pid()
    first = _run(client, "t0")
    client.post(f"/containers/{first}/exec", {"Cmd": ["true"]})  # (warm up the exec path too)
    time.sleep(0.5)
    with_one = _threads(pid)
    ids = [first] + [_run(client, f"t{i}") for i in range(1, CONTAINERS)]
    running = [c for c in client.get("/containers/json") if c["State"] == "running"]
    assert len(running) == CONTAINERS
    time.sleep(0.5)
    with_all = _threads(pid)
    print(f"sampand threads: {with_one} with 1 container, {with_all} with {CONTAINERS}")
    assert with_all <= with_one + SLACK, f"{with_one} threads with 1 container, {with_all} with {CONTAINERS}"
    for cid in ids:
        client.delete(f"/containers/{cid}", force=1)
    assert client.get("/containers/json", all=1) == []
