"""Snapshots on real overlay mounts: unpack once, merged views, 130 layers, crash safety,
the copy fallback, and nothing left behind on failure."""
import gzip
import hashlib
import io
import os
import stat
import tarfile
import threading

import pytest

from sampan.image.content import ContentStore
from sampan.image.metadata import Metadata
from sampan.image.snapshots import SnapshotError, Snapshotter, is_mounted, mountpoints, unmount_path

T0 = 1_600_000_000


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_tar(entries) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for kind, name, *rest in entries:
            ti = tarfile.TarInfo(name)
            ti.mtime = T0
            data = None
            if kind == "file":
                data = rest[0]
                ti.size, ti.mode = len(data), 0o644
            elif kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            elif kind == "symlink":
                ti.type, ti.linkname = tarfile.SYMTYPE, rest[0]
            t.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


GZ = "application/vnd.oci.image.layer.v1.tar+gzip"


@pytest.fixture(autouse=True)
def no_mounts_left(tmp_path):
    yield
    left = [m for m in mountpoints() if m.startswith(str(tmp_path))]
    for m in sorted(left, reverse=True):
        unmount_path(m)
    assert not left, f"mounts left behind: {left}"


class Env:
    def __init__(self, root, kind=None):
        self.root = str(root)
        self.content = ContentStore(self.root)
        self.meta = Metadata(self.root)
        self.snap = Snapshotter(self.root, self.content, self.meta, kind)

    def layer(self, entries, compress=True):
        tar = make_tar(entries)
        blob = gzip.compress(tar, 1) if compress else tar
        return self.content.put(blob), sha(tar)

    def unpack(self, entries):
        digest, diff_id = self.layer(entries)
        self.snap.unpack(diff_id, digest, GZ)
        return diff_id


@pytest.fixture
def env(tmp_path):
    e = Env(tmp_path / "root")
    yield e
    e.meta.close()


def snapshot_dirs(env):
    return sorted(os.listdir(env.snap.snapshots_dir))


def test_layer_is_unpacked_once_and_recorded(env):
    digest, diff_id = env.layer([("file", "a", b"1")])
    res = env.snap.unpack(diff_id, digest, GZ)
    assert res.diff_id == diff_id
    assert env.snap.unpack(diff_id, digest, GZ) is None  # already there
    path = env.snap.path(diff_id)
    assert path and open(os.path.join(path, "a"), "rb").read() == b"1"
    assert path.endswith("/fs") and os.path.basename(os.path.dirname(path)).isdigit()
    row = env.meta.layer(diff_id)
    assert row["state"] == "ready" and row["unpacked_size"] == 1
    assert env.meta.layer_blob(diff_id)["digest"] == digest
    assert [d for d in snapshot_dirs(env) if d.startswith("ingest")] == []


def test_concurrent_unpacks_of_one_layer_make_one_snapshot(env):
    digest, diff_id = env.layer([("file", f"f{i}", os.urandom(2000)) for i in range(200)])
    results, errors = [], []

    def go():
        try:
            results.append(env.snap.unpack(diff_id, digest, GZ))
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(r is not None for r in results) == 1
    assert [d for d in snapshot_dirs(env) if d.isdigit()] == [os.path.basename(os.path.dirname(env.snap.path(diff_id)))]


def test_three_layer_overlay_shows_the_merged_view(env, tmp_path):
    l1 = env.unpack([("dir", "etc"), ("file", "etc/os-release", b"v1"), ("file", "etc/passwd", b"root"),
                     ("dir", "var"), ("file", "var/log", b"log"), ("dir", "app"), ("file", "app/old", b"o")])
    l2 = env.unpack([("dir", "etc"), ("file", "etc/os-release", b"v2"), ("file", "etc/.wh.passwd", b""),
                     ("file", ".wh.var", b"")])
    l3 = env.unpack([("dir", "app"), ("file", "app/.wh..wh..opq", b""), ("file", "app/new", b"n"),
                     ("symlink", "bin", "usr/bin")])
    spec = env.snap.prepare("c1", [l1, l2, l3])
    assert spec.kind == "overlay" and is_mounted(spec.rootfs)
    assert spec.lowers == [env.snap.path(l3), env.snap.path(l2), env.snap.path(l1)]
    root = spec.rootfs
    assert sorted(os.listdir(root)) == ["app", "bin", "etc"]
    assert open(f"{root}/etc/os-release").read() == "v2"
    assert os.listdir(f"{root}/etc") == ["os-release"]
    assert os.listdir(f"{root}/app") == ["new"]
    assert os.readlink(f"{root}/bin") == "usr/bin"
    # writes go to the container's upper dir, never to a shared layer
    with open(f"{root}/etc/hostname", "w") as f:
        f.write("c1")
    os.unlink(f"{root}/etc/os-release")
    assert os.path.exists(os.path.join(spec.upper, "etc/hostname"))
    assert open(os.path.join(env.snap.path(l2), "etc/os-release")).read() == "v2"
    # a second container over the same layers sees the image, not c1's changes
    spec2 = env.snap.prepare("c2", [l1, l2, l3])
    assert open(f"{spec2.rootfs}/etc/os-release").read() == "v2"
    assert not os.path.exists(f"{spec2.rootfs}/etc/hostname")
    # unmount / mount again keeps the changes
    env.snap.unmount("c1")
    assert not env.snap.mounted("c1")
    env.snap.mount("c1")
    assert open(f"{root}/etc/hostname").read() == "c1"
    for key in ("c1", "c2"):
        env.snap.remove(key)
        assert not os.path.exists(os.path.join(env.snap.containers_dir, key))
    assert env.snap.keys() == []


def test_130_layers_mount(env):
    diff_ids = []
    for i in range(130):
        entries = [("dir", "layers"), ("file", f"layers/{i:03d}", str(i).encode()), ("file", "top", str(i).encode())]
        if i == 129:
            entries.append(("file", "layers/.wh.000", b""))
        diff_ids.append(env.unpack(entries))
    spec = env.snap.prepare("many", diff_ids)
    try:
        names = sorted(os.listdir(os.path.join(spec.rootfs, "layers")))
        assert len(names) == 129 and names[0] == "001" and names[-1] == "129"
        assert open(os.path.join(spec.rootfs, "top")).read() == "129"
        assert len(":".join(spec.lowers)) > 4096  # the real paths would not have fit
    finally:
        env.snap.remove("many")


def test_empty_image_gets_an_empty_rootfs(env):
    spec = env.snap.prepare("scratch", [])
    assert os.listdir(spec.rootfs) == []
    env.snap.remove("scratch")


@pytest.mark.parametrize("damage", ["truncated", "wrong-digest", "wrong-diff-id", "escape"])
def test_failed_unpack_leaves_nothing(env, damage):
    tar = make_tar([("file", f"f{i}", os.urandom(5000)) for i in range(50)])
    blob = gzip.compress(tar)
    diff_id = sha(tar)
    if damage == "truncated":
        digest = env.content.put(blob[: len(blob) // 2])
    elif damage == "wrong-digest":
        digest = env.content.put(blob)
        os.chmod(env.content.path(digest), 0o644)
        with open(env.content.path(digest), "r+b") as f:  # bit rot on disk
            f.seek(100)
            f.write(b"\0" * 20)
    elif damage == "wrong-diff-id":
        digest = env.content.put(blob)
        diff_id = sha(b"something else")
    else:
        bad = make_tar([("file", "ok", b"1"), ("file", "../../escape", b"x")])
        digest, diff_id = env.content.put(gzip.compress(bad)), sha(bad)
    with pytest.raises(Exception) as e:
        env.snap.unpack(diff_id, digest, GZ)
    assert "\n" not in str(e.value)
    assert snapshot_dirs(env) == []
    assert env.meta.layer(diff_id) is None
    assert not env.snap.has(diff_id)


def test_prepare_failure_leaves_nothing(env):
    l1 = env.unpack([("file", "a", b"1")])
    with pytest.raises(SnapshotError, match="not in the store"):
        env.snap.prepare("c1", [l1, sha(b"missing layer")])
    assert os.listdir(env.snap.containers_dir) == []
    assert env.meta.rootfs("c1") is None
    env.snap.prepare("c1", [l1])
    with pytest.raises(SnapshotError, match="already exists"):
        env.snap.prepare("c1", [l1])
    assert is_mounted(os.path.join(env.snap.containers_dir, "c1", "rootfs"))
    env.snap.remove("c1")
    for bad in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(SnapshotError, match="invalid snapshot key"):
            env.snap.prepare(bad, [l1])


def test_remove_keeps_engine_files_in_the_container_dir(env):
    l1 = env.unpack([("file", "a", b"1")])
    spec = env.snap.prepare("c1", [l1])
    cdir = os.path.dirname(spec.rootfs)
    with open(os.path.join(cdir, "config.json"), "w") as f:
        f.write("{}")
    env.snap.remove("c1")
    assert os.listdir(cdir) == ["config.json"]


def test_copy_fallback(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMPAN_SNAPSHOTTER", "copy")
    env = Env(tmp_path / "root")
    assert env.snap.kind == "copy"
    l1 = env.unpack([("dir", "etc"), ("file", "etc/a", b"a"), ("file", "etc/b", b"b"), ("dir", "d"),
                     ("file", "d/x", b"x")])
    l2 = env.unpack([("file", "etc/.wh.a", b""), ("dir", "d"), ("file", "d/.wh..wh..opq", b""),
                     ("file", "d/y", b"y")])
    assert env.meta.layer(l1)["state"] == "verified"
    assert snapshot_dirs(env) == []  # nothing unpacked per layer
    spec = env.snap.prepare("c1", [l1, l2])
    assert spec.kind == "copy" and not is_mounted(spec.rootfs)
    assert sorted(os.listdir(spec.rootfs)) == ["d", "etc"]
    assert os.listdir(os.path.join(spec.rootfs, "etc")) == ["b"]
    assert os.listdir(os.path.join(spec.rootfs, "d")) == ["y"]
    with pytest.raises(SnapshotError, match="overlay"):
        env.snap.diff("c1", io.BytesIO())
    env.snap.remove("c1")
    assert os.listdir(env.snap.containers_dir) == []
    # a corrupt layer is caught at verify time already
    tar = make_tar([("file", "z", b"z")])
    digest = env.content.put(gzip.compress(tar)[:20])
    with pytest.raises(Exception):
        env.snap.unpack(sha(tar), digest, GZ)
    assert env.meta.layer(sha(tar)) is None
    env.meta.close()


def test_copy_fallback_prepare_failure_leaves_nothing(tmp_path):
    env = Env(tmp_path / "root", kind="copy")
    l1 = env.unpack([("file", "a", b"1")])
    os.unlink(env.content.path(env.meta.layer_blob(l1)["digest"]))  # blob lost
    with pytest.raises(SnapshotError, match="no blob"):
        env.snap.prepare("c1", [l1])
    assert os.listdir(env.snap.containers_dir) == []
    assert env.meta.rootfs("c1") is None
    env.meta.close()


def test_container_diff(env):
    l1 = env.unpack([("dir", "etc"), ("file", "etc/a", b"a"), ("file", "etc/b", b"b")])
    spec = env.snap.prepare("c1", [l1])
    os.unlink(os.path.join(spec.rootfs, "etc/a"))
    with open(os.path.join(spec.rootfs, "etc/c"), "w") as f:
        f.write("c")
    out = io.BytesIO()
    d = env.snap.diff("c1", out)
    env.snap.remove("c1")
    assert d == sha(out.getvalue())
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as t:
        assert t.getnames() == ["etc", "etc/.wh.a", "etc/c"]
    # the diff is a layer like any other
    digest = env.content.put(out.getvalue())
    env.snap.unpack(d, digest, "application/vnd.oci.image.layer.v1.tar")
    spec = env.snap.prepare("c2", [l1, d])
    assert sorted(os.listdir(os.path.join(spec.rootfs, "etc"))) == ["b", "c"]
    assert stat.S_ISDIR(os.lstat(spec.rootfs).st_mode)
    env.snap.remove("c2")
