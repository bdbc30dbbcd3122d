"""GC removes what nothing refers to, and never what an image, a container, a lease or a
writer in progress holds — also while images are being added concurrently."""
import fcntl
import gzip
import hashlib
import io
import json
import os
import tarfile
import threading
import time

import pytest

from sampan.image.snapshots import mountpoints, unmount_path
from sampan.image.store import ImageStore

GZ = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_tar(files: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def add(store, layer_files):
    """As a pull or a load does it: blobs go in under a lease, then add_image."""
    blobs = [gzip.compress(make_tar(files), 1) for files in layer_files]
    diff_ids = [sha(make_tar(files)) for files in layer_files]
    with store.lease(blobs=[sha(b) for b in blobs]):
        layers = [(store.content.put(b), GZ) for b in blobs]
        config = json.dumps({"os": "linux", "architecture": "amd64",
                             "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
        return store.add_image(b"{}", config, layers)


@pytest.fixture
def store(tmp_path):
    s = ImageStore(str(tmp_path / "root"))
    yield s
    for key in s.snapshots.keys():
        s.snapshots.remove(key)
    s.close()
    left = [m for m in mountpoints() if m.startswith(str(tmp_path))]
    for m in left:
        unmount_path(m)
    assert not left


def snapshot_dirs(store):
    return sorted(d for d in os.listdir(store.snapshots.snapshots_dir) if d != "empty")


def test_unreferenced_blobs_go_referenced_stay(store):
    iid = add(store, [{"a": b"a"}])
    stray = store.content.put(b"stray blob")
    res = store.gc()
    assert res.blobs == [stray] and res.bytes_freed >= len(b"stray blob")
    img = store.get(iid)
    for d in [iid, img.manifest_digest] + [layer.digest for layer in img.layers]:
        assert store.content.has(d)
    assert store.gc().blobs == []


def test_lease_keeps_blob_until_released_or_expired(store):
    d = store.content.put(b"being pulled")
    with store.lease(blobs=[d]) as name:
        assert store.gc().blobs == []
        assert store.content.has(d)
        d2 = store.content.put(b"second blob of the pull")
        store.meta.add_to_lease(name, blobs=[d2])
        assert store.gc().blobs == []
    assert sorted(store.gc().blobs) == sorted([d, d2])
    # an expired lease (a crashed pull) protects nothing
    d3 = store.content.put(b"orphaned pull")
    store.meta.create_lease("crashed", expires_in=-1, blobs=[d3])
    assert store.gc().blobs == [d3]
    assert store.meta.leases() == []


def test_lease_keeps_layer_snapshot(store):
    iid = add(store, [{"a": b"a"}])
    diff_id = store.get(iid).diff_ids[0]
    name = store.meta.create_lease(layers=[diff_id])
    store.remove(iid)
    assert store.snapshots.has(diff_id)
    store.meta.delete_lease(name)
    assert store.gc().layers == [diff_id]
    assert snapshot_dirs(store) == []


def test_snapshot_of_a_mounted_container_is_never_removed(store):
    iid = add(store, [{"base": b"b"}, {"top": b"t"}])
    spec = store.prepare_rootfs("ctr", iid)
    store.remove(iid)  # image gone; container still running on its layers
    assert store.list() == []
    res = store.gc()
    assert res.layers == []
    assert sorted(os.listdir(spec.rootfs)) == ["base", "top"]
    assert len(snapshot_dirs(store)) == 2
    # layer blobs may go (the snapshots hold the data) ...
    store.snapshots.remove("ctr")
    # ... and once the container is removed, so do the snapshots
    assert len(store.gc().layers) == 2
    assert snapshot_dirs(store) == []


def test_ingest_in_progress_is_kept_stale_one_removed(store):
    data = b"x" * 100_000
    w = store.content.writer(sha(data), size=len(data))
    w.write(data[:50_000])
    res = store.gc(ingest_age=0)
    assert res.ingests == [] and len(os.listdir(store.content.ingest_dir)) == 1
    w.close()  # the writer died: its partial can be resumed for a while ...
    assert store.gc().ingests == []
    res = store.gc(ingest_age=0)  # ... and is collected once stale
    assert len(res.ingests) == 1 and os.listdir(store.content.ingest_dir) == []


def test_crash_leftovers_are_removed_live_unpacks_are_not(store):
    sdir = store.snapshots.snapshots_dir
    # a layer renamed into place whose recording transaction never committed
    os.makedirs(os.path.join(sdir, "77", "fs", "usr"))
    # an abandoned unpack (nobody holds its lock), old enough
    stale = os.path.join(sdir, "ingest-dead")
    os.makedirs(os.path.join(stale, "fs"))
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    # an unpack in progress: locked
    live = os.path.join(sdir, "ingest-live")
    os.makedirs(os.path.join(live, "fs"))
    os.utime(live, (time.time() - 3600, time.time() - 3600))
    fd = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        res = store.gc()
        assert stale in res.ingests
        assert sorted(os.listdir(sdir)) == ["ingest-live"]
    finally:
        os.close(fd)
    store.gc()
    assert os.listdir(sdir) == []


def test_gc_racing_with_adds_never_breaks_an_image(store):
    stop = threading.Event()
    errors = []

    def collector():
        while not stop.is_set():
            try:
                store.gc(ingest_age=0)
            except Exception as e:  # pragma: no cover
                errors.append(e)

    t = threading.Thread(target=collector)
    t.start()
    try:
        ids = []
        for i in range(12):
            ids.append(add(store, [{"shared": b"s" * 10_000}, {f"own{i}": os.urandom(20_000)}]))
            if i % 3 == 2:
                store.remove(ids.pop(0))
    finally:
        stop.set()
        t.join()
    assert not errors
    for iid in ids:
        img = store.get(iid)
        assert store.content.has(iid) and store.content.has(img.manifest_digest)
        for layer in img.layers:
            assert store.content.has(layer.digest)
            assert store.snapshots.path(layer.diff_id) and os.path.isdir(store.snapshots.path(layer.diff_id))
    spec = store.prepare_rootfs("check", ids[-1])
    assert "shared" in os.listdir(spec.rootfs)
