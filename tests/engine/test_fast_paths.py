"""What the engine does for speed keeps Docker's semantics: a `removed` wait (docker run --rm)
gets the exit code and the container is gone with all its files soon after; the rootfs that
create mounts is unmounted when no start follows; a rootfs left by a removal cut short is
swept at the next reconcile."""
from __future__ import annotations

import os
import time


def _mounted(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def _gone_within(check, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def test_removed_wait_has_the_exit_code_and_the_files_go(engine):
    cid = engine.create({"Image": "busybox", "Cmd": ["sh", "-c", "exit 7"], "HostConfig": {"AutoRemove": True}})
    cdir = engine.cdir(cid)
    sock = engine.attach(cid, stdout=True, stderr=True)
    wait = engine.wait_prepare(cid, "removed")  # before the start, as the API does
    engine.start(cid)
    while sock.recv(65536):
        pass
    sock.close()
    assert wait() == {"StatusCode": 7, "Error": None}
    assert engine.store.get(cid) is None
    assert _gone_within(lambda: not os.path.exists(cdir) and not _mounted(os.path.join(cdir, "rootfs")))
    assert not os.path.exists(os.path.join(engine.runtime_root, cid))


def test_create_unmounts_the_rootfs_when_no_start_follows(engine, monkeypatch):
    from sampan.engine.containers import create
    monkeypatch.setattr(create, "IDLE_MOUNT_SECONDS", 0.2)
    cid = engine.create({"Image": "busybox", "Cmd": ["true"]})
    rootfs = os.path.join(engine.cdir(cid), "rootfs")
    assert _gone_within(lambda: not _mounted(rootfs))
    engine.start(cid)  # mounts it again
    assert engine.wait(cid, timeout=20)["StatusCode"] == 0


def test_reconcile_sweeps_the_files_of_a_removal_cut_short(engine):
    cid = engine.create({"Image": "busybox", "Cmd": ["true"]})
    cdir = engine.cdir(cid)
    engine.images.snapshots.mount(cid)
    engine.store.delete_container(cid)  # as if sampand died between the record and the files
    assert os.path.isdir(cdir)
    engine.reconcile()
    assert not os.path.exists(cdir) and not _mounted(os.path.join(cdir, "rootfs"))
