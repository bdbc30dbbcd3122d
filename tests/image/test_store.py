"""The image store façade: add (verified, parallel, all-or-nothing), tags, lookups as docker
does them, inspect/history, rmi and prune semantics, docker-save style layouts."""
import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
import threading

import pytest
import zstandard

from sampan.image.snapshots import mountpoints, unmount_path
from sampan.image.store import (AmbiguousImage, Conflict, ImageNotFound, ImageStore, InvalidImage,
                                MissingBlob)

GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
ZST = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_TAR = "application/vnd.docker.image.rootfs.diff.tar"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_tar(files: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.mtime = 1_600_000_000
            if data is None:
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                t.addfile(ti)
            else:
                ti.size, ti.mode = len(data), 0o644
                t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def build(store, layer_files, *, compression="gzip", history=None, created="2024-01-02T03:04:05.123456789Z",
          extra_config=None):
    """Put the layers in the store's content; returns (manifest, config, layers)."""
    layers, diff_ids, descs = [], [], []
    for files in layer_files:
        tar = make_tar(files)
        if compression == "gzip":
            blob, mt = gzip.compress(tar, 1), GZ
        elif compression == "zstd":
            blob, mt = zstandard.ZstdCompressor().compress(tar), ZST
        else:
            blob, mt = tar, DOCKER_TAR
        d = store.content.put(blob)
        layers.append((d, mt))
        diff_ids.append(sha(tar))
        descs.append({"mediaType": mt, "digest": d, "size": len(blob)})
    cfg = {"architecture": "amd64", "os": "linux", "created": created,
           "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
           "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    if history is not None:
        cfg["history"] = history
    cfg.update(extra_config or {})
    config = json.dumps(cfg, sort_keys=True).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": sha(config), "size": len(config)},
                           "layers": descs}).encode()
    return manifest, config, layers


def add(store, layer_files, **kw):
    m, c, ls = build(store, layer_files, **kw)
    return store.add_image(m, c, ls)


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


BASE = {"etc": None, "etc/os-release": b"ID=test\n", "bin": None, "bin/sh": b"#!"}


def test_add_list_inspect_history(store):
    hist = [{"created": "2024-01-01T00:00:00Z", "created_by": "ADD rootfs /"},
            {"created": "2024-01-02T00:00:00Z", "created_by": "ENV A=1", "empty_layer": True},
            {"created": "2024-01-02T03:04:05Z", "created_by": "RUN make", "comment": "buildkit"}]
    iid = add(store, [BASE, {"app": None, "app/bin": b"x" * 1000}], history=hist)
    assert iid.startswith("sha256:") and len(iid) == 71
    store.tag(iid, "myapp:1.0")
    store.tag(iid, "localhost:5000/team/myapp")
    [img] = store.list()
    assert img.id == iid and img.short_id == iid[7:19]
    assert sorted(img.repo_tags) == ["localhost:5000/team/myapp:latest", "myapp:1.0"]
    assert img.size == len(b"ID=test\n") + 2 + 1000
    assert len(img.layers) == 2 and not img.dangling
    info = store.inspect("myapp:1.0")
    assert info["Id"] == iid and info["Os"] == "linux" and info["Architecture"] == "amd64"
    assert info["Config"]["Cmd"] == ["/bin/sh"]
    assert info["RootFS"] == {"Type": "layers", "Layers": img.diff_ids}
    assert info["Created"] == "2024-01-02T03:04:05.123456789Z"
    assert info["Descriptor"]["digest"] == img.manifest_digest
    h = store.history(iid)
    assert [e["CreatedBy"] for e in h] == ["RUN make", "ENV A=1", "ADD rootfs /"]
    assert h[0]["Id"] == iid and h[1]["Id"] == "<missing>"
    assert [e["Size"] for e in h] == [1000, 0, 10]
    assert h[0]["Created"] == 1704164645 and h[0]["Comment"] == "buildkit"
    assert sorted(h[0]["Tags"]) == ["localhost:5000/team/myapp:latest", "myapp:1.0"]


def test_resolve_like_docker(store):
    iid = add(store, [BASE])
    store.tag(iid, "busybox")
    store.tag(iid, f"busybox@{'sha256:' + 'c' * 64}")
    for name in ("busybox", "busybox:latest", "docker.io/library/busybox:latest", "library/busybox",
                 iid, iid[7:], iid[7:19], iid[7:8], "sha256:" + iid[7:15], f"busybox@sha256:{'c' * 64}"):
        assert store.resolve(name).id == iid, name
    img = store.resolve(iid)
    assert store.resolve(f"busybox@{img.manifest_digest}").id == iid  # by manifest digest
    with pytest.raises(ImageNotFound, match="No such image: busybox:2"):
        store.resolve("busybox:2")
    with pytest.raises(ImageNotFound):
        store.resolve("Not A Ref")
    # more images until two IDs share their first hex digit (at most 17 by pigeonhole)
    first = {iid[7]: iid}
    for i in range(17):
        other = add(store, [{"x": str(i).encode()}])
        if other[7] in first:
            break
        first[other[7]] = other
    with pytest.raises(AmbiguousImage, match="multiple IDs found with provided prefix"):
        store.resolve(other[7])
    assert store.resolve(other[7:20]).id == other


def test_same_layers_are_unpacked_once_and_shared(store):
    a = add(store, [BASE, {"a": b"a"}])
    b = add(store, [BASE, {"b": b"b"}])
    assert a != b
    assert len([d for d in os.listdir(store.snapshots.snapshots_dir) if d.isdigit()]) == 3
    assert store.resolve(a).layers[0].diff_id == store.resolve(b).layers[0].diff_id
    # adding the same image again is a no-op that returns the same ID
    assert add(store, [BASE, {"a": b"a"}]) == a
    assert len(store.list()) == 2


def test_parallel_adds_sharing_layers(store):
    ids, errors = [], []

    def go(i):
        try:
            ids.append(add(store, [BASE, {f"f{i}": os.urandom(100_000)}, {"shared": b"s"}]))
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(ids)) == 6
    assert len([d for d in os.listdir(store.snapshots.snapshots_dir) if d.isdigit()]) == 8


def test_zstd_and_uncompressed_layers(store):
    iid = add(store, [BASE, {"z": b"zstd"}], compression="zstd")
    spec = store.prepare_rootfs("z", iid)
    assert open(os.path.join(spec.rootfs, "z")).read() == "zstd"
    store.snapshots.remove("z")
    iid2 = add(store, [{"plain": b"tar"}], compression="none")
    spec = store.prepare_rootfs("p", iid2)
    assert open(os.path.join(spec.rootfs, "plain")).read() == "tar"


def test_bad_input_leaves_no_partial_image(store):
    m, c, ls = build(store, [BASE, {"a": b"a"}])
    with pytest.raises(MissingBlob, match="missing blob sha256:0000"):
        store.add_image(b"{}", c, [ls[0], ("sha256:" + "0" * 64, GZ)])
    with pytest.raises(InvalidImage, match="malformed image config") as e:
        store.add_image(m, b"{not json", ls)
    assert "\n" not in str(e.value)
    with pytest.raises(InvalidImage, match="malformed image manifest"):
        store.add_image(b"[", c, ls)
    with pytest.raises(InvalidImage, match="names config"):
        store.add_image(m, c.replace(b"amd64", b"arm64"), ls)
    cfg = json.loads(c)
    cfg["rootfs"]["diff_ids"] = cfg["rootfs"]["diff_ids"][:1]
    c1 = json.dumps(cfg).encode()
    with pytest.raises(InvalidImage, match="2 layers but its config lists 1"):
        store.add_image(b"{}", c1, ls)
    # the second layer's diff_id is wrong: the first (good) one was unpacked by this call
    # and is removed again, the bad one never became a snapshot
    cfg = json.loads(c)
    cfg["rootfs"]["diff_ids"][1] = sha(b"lie")
    with pytest.raises(InvalidImage, match="diff_id mismatch"):
        store.add_image(b"{}", json.dumps(cfg).encode(), ls)
    # a truncated blob
    tar = make_tar({"t": os.urandom(100_000)})
    cut = store.content.put(gzip.compress(tar)[:5000])
    cfg["rootfs"]["diff_ids"] = [sha(tar)]
    with pytest.raises(InvalidImage, match="truncated|unexpected end") as e:
        store.add_image(b"{}", json.dumps(cfg).encode(), [(cut, GZ)])
    assert "\n" not in str(e.value)
    assert store.list() == []
    assert [d for d in os.listdir(store.snapshots.snapshots_dir) if d != "empty"] == []
    assert store.meta.layers() == []
    assert store.meta.leases() == []
    # and the good image still goes in afterwards
    assert store.add_image(m, c, ls) == sha(c)


def test_tag_moves_and_untag(store):
    a = add(store, [{"a": b"a"}])
    b = add(store, [{"b": b"b"}])
    assert store.tag(a, "app") == "docker.io/library/app:latest"
    store.tag(b, "app")
    assert store.resolve("app").id == b
    assert store.resolve(a).dangling
    assert store.untag("app") == b
    with pytest.raises(ImageNotFound):
        store.untag("app")
    with pytest.raises(ImageNotFound):
        store.tag("sha256:" + "1" * 64, "x")
    with pytest.raises(ValueError, match="invalid reference format"):
        store.tag(a, "Bad:Name")


def test_rmi_untags_until_the_last_reference(store):
    iid = add(store, [BASE])
    store.tag(iid, "a:1")
    store.tag(iid, "b:1")
    assert store.remove("a:1") == [{"Untagged": "a:1"}]
    assert store.resolve(iid).repo_tags == ["b:1"]
    records = store.remove("b:1")
    assert records == [{"Untagged": "b:1"}, {"Deleted": iid}]
    assert store.list() == []
    # everything of it is gone from disk after the implicit GC
    assert list(store.content.digests()) == []
    assert [d for d in os.listdir(store.snapshots.snapshots_dir) if d.isdigit()] == []


def test_rmi_by_name_also_drops_digest_refs_of_that_repo(store):
    iid = add(store, [BASE])
    dref = "busybox@sha256:" + "d" * 64
    store.tag(iid, "busybox:latest")
    store.tag(iid, dref)
    assert store.remove("busybox") == [{"Untagged": "busybox:latest"}, {"Untagged": dref}, {"Deleted": iid}]


def test_rmi_by_id(store):
    iid = add(store, [BASE])
    store.tag(iid, "one:1")
    store.tag(iid, "one:2")  # two tags: not a single reference
    store.tag(iid, "two:1")
    with pytest.raises(Conflict, match=r"must be forced\) - image is referenced in multiple repositories"):
        store.remove(iid[7:19])
    assert store.resolve(iid).refs
    records = store.remove(iid[7:19], force=True)
    assert records[-1] == {"Deleted": iid}
    assert sorted(r["Untagged"] for r in records[:-1]) == ["one:1", "one:2", "two:1"]
    # a single repository: removing by ID untags and deletes without force
    iid2 = add(store, [{"x": b"x"}])
    store.tag(iid2, "solo:1")
    assert store.remove(iid2) == [{"Untagged": "solo:1"}, {"Deleted": iid2}]
    with pytest.raises(ImageNotFound):
        store.remove(iid2)


def test_rmi_respects_containers(store):
    users = {}
    store.in_use = lambda image_id: users.get(image_id, [])
    iid = add(store, [BASE])
    store.tag(iid, "app:1")
    users[iid] = [("c0ffee" * 10 + "abcd", False)]
    with pytest.raises(Conflict, match="must force") as e:
        store.remove("app:1")
    assert e.value.status == 409
    with pytest.raises(Conflict, match=r"must be forced\) - image is being used by stopped container c0ffeec0ffee"):
        store.remove(iid)
    users[iid] = [("beef" * 16, True)]
    with pytest.raises(Conflict, match=r"cannot be forced\) - image is being used by running container beefbeefbeef"):
        store.remove(iid, force=True)
    # by name with force: the tag goes, the image stays quietly while a container runs it
    assert store.remove("app:1", force=True) == [{"Untagged": "app:1"}]
    assert store.resolve(iid).dangling
    users[iid] = [("beef" * 16, False)]
    assert store.remove(iid, force=True) == [{"Deleted": iid}]


def test_rmi_refuses_parents_of_other_images(store):
    parent = add(store, [BASE])
    m, c, ls = build(store, [BASE, {"child": b"c"}])
    child = store.add_image(m, c, ls, parent=parent)
    with pytest.raises(Conflict, match="dependent child images"):
        store.remove(parent, force=True)
    store.remove(child)
    assert store.remove(parent) == [{"Deleted": parent}]


def test_prune(store):
    users = {}
    store.in_use = lambda image_id: users.get(image_id, [])
    tagged = add(store, [BASE])
    store.tag(tagged, "keep:1")
    dangling = add(store, [{"d": b"d" * 5000}])
    used = add(store, [{"u": b"u"}])
    users[used] = [("c" * 64, False)]
    res = store.prune()
    assert res["ImagesDeleted"] == [{"Deleted": dangling}]
    assert res["SpaceReclaimed"] > 5000
    assert {i.id for i in store.list()} == {tagged, used}
    res = store.prune(dangling_only=False)
    assert res["ImagesDeleted"] == [{"Untagged": "keep:1"}, {"Deleted": tagged}]
    assert [i.id for i in store.list()] == [used]
    assert store.prune()["ImagesDeleted"] is None


def test_rootfs_from_image_and_gc_keeps_its_layers(store):
    iid = add(store, [BASE, {"etc/.wh.os-release": b"", "app": b"app"}])
    store.tag(iid, "app")
    spec = store.prepare_rootfs("web", "app")
    assert sorted(os.listdir(spec.rootfs)) == ["app", "bin", "etc"]
    assert os.listdir(os.path.join(spec.rootfs, "etc")) == []
    store.remove("app", force=True)  # no in_use hook here: the image goes, its layers stay
    assert os.listdir(os.path.join(spec.rootfs, "bin")) == ["sh"]
    store.gc()
    assert open(os.path.join(spec.rootfs, "app")).read() == "app"
    store.snapshots.remove("web")
    store.gc()
    assert [d for d in os.listdir(store.snapshots.snapshots_dir) if d.isdigit()] == []


def test_docker_save_style_layout_made_with_gnu_tar(store, tmp_path):
    """A `docker save`-shaped archive (manifest.json, config, uncompressed GNU tar layers)
    goes in with the same image ID docker gives it (the config digest)."""
    src = tmp_path / "src"
    (src / "l1/bin").mkdir(parents=True)
    (src / "l1/bin/busybox").write_bytes(b"\x7fELF" + b"\0" * 5000)
    os.chmod(src / "l1/bin/busybox", 0o755)
    os.symlink("busybox", src / "l1/bin/sh")
    (src / "l2/etc").mkdir(parents=True)
    (src / "l2/etc/motd").write_text("hello\n")
    (src / "l2/.wh.bin").mkdir(exist_ok=True)  # placeholder dir removed below
    os.rmdir(src / "l2/.wh.bin")
    (src / "l2/bin").mkdir()
    (src / "l2/bin/.wh.sh").write_bytes(b"")
    archive = tmp_path / "archive"
    (archive / "blobs/sha256").mkdir(parents=True)
    layer_paths, diff_ids = [], []
    for name in ("l1", "l2"):
        out = tmp_path / f"{name}.tar"
        subprocess.run(["tar", "--numeric-owner", "--owner=0", "--group=0", "--mtime=@1600000000",
                        "--sort=name", "-cf", str(out), "-C", str(src / name), "."], check=True)
        data = out.read_bytes()
        (archive / "blobs/sha256" / sha(data)[7:]).write_bytes(data)
        layer_paths.append(f"blobs/sha256/{sha(data)[7:]}")
        diff_ids.append(sha(data))
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids},
                         "history": [{"created_by": "ADD"}, {"created_by": "COPY"}]}).encode()
    (archive / "blobs/sha256" / sha(config)[7:]).write_bytes(config)
    (archive / "manifest.json").write_text(json.dumps([{
        "Config": f"blobs/sha256/{sha(config)[7:]}", "RepoTags": ["busybox:saved"], "Layers": layer_paths}]))
    # a minimal loader, as the archive code does it: blobs in, then add_image
    entry = json.loads((archive / "manifest.json").read_text())[0]
    layers = []
    for p in entry["Layers"]:
        with open(archive / p, "rb") as f, store.content.writer() as w:
            w.write(f.read())
            layers.append((w.commit(), DOCKER_TAR))
    cfg = (archive / entry["Config"]).read_bytes()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                           "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                                      "digest": sha(cfg), "size": len(cfg)},
                           "layers": [{"mediaType": DOCKER_TAR, "digest": d, "size": store.content.size(d)}
                                      for d, _ in layers]}).encode()
    iid = store.add_image(manifest, cfg, layers)
    assert iid == sha(config)
    for t in entry["RepoTags"]:
        store.tag(iid, t)
    assert store.inspect("busybox:saved")["Id"] == iid
    spec = store.prepare_rootfs("bb", "busybox:saved")
    assert sorted(os.listdir(os.path.join(spec.rootfs, "bin"))) == ["busybox"]
    assert open(os.path.join(spec.rootfs, "etc/motd")).read() == "hello\n"
    assert os.stat(os.path.join(spec.rootfs, "bin/busybox")).st_mode & 0o777 == 0o755


def test_progress_is_reported(store):
    m, c, ls = build(store, [{"big": os.urandom(2_000_000)}])
    seen = []
    store.add_image(m, c, ls, progress=lambda d, done, total: seen.append((d, done, total)))
    assert seen and seen[-1][1] == seen[-1][2] == store.content.size(ls[0][0])


def test_copy_snapshotter_store(tmp_path):
    s = ImageStore(str(tmp_path / "root"), snapshotter="copy")
    iid = add(s, [BASE, {"etc/.wh.os-release": b"", "x": b"x"}])
    spec = s.prepare_rootfs("c", iid)
    assert sorted(os.listdir(spec.rootfs)) == ["bin", "etc", "x"]
    assert os.listdir(os.path.join(spec.rootfs, "etc")) == []
    s.remove(iid)
    s.gc()
    spec_dir = spec.rootfs
    assert open(os.path.join(spec_dir, "x")).read() == "x"  # a copy: independent of the store
    s.snapshots.remove("c")
    s.close()


def test_import_layer_stores_and_unpacks_in_one_pass(store):
    """What `load` does: each layer stream read once, blob and snapshot made together,
    several at once, under a lease; add_image then finds everything in place."""
    tars = [make_tar(BASE), make_tar({"app": os.urandom(300_000)}), make_tar({"etc/.wh.os-release": b""})]
    blobs = [tars[0], gzip.compress(tars[1]), tars[2]]
    lease = store.meta.create_lease()
    results = [None] * 3
    errors = []

    def go(i):
        try:
            results[i] = store.import_layer(io.BytesIO(blobs[i]), GZ if i == 1 else DOCKER_TAR,
                                            expected_diff_id=sha(tars[i]), lease=lease)
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [r[0] for r in results] == [sha(b) for b in blobs]
    assert [r[1] for r in results] == [sha(t) for t in tars]
    store.gc()  # the lease keeps them
    assert all(store.content.has(sha(b)) for b in blobs)
    before = sorted(os.listdir(store.snapshots.snapshots_dir))
    config = json.dumps({"os": "linux", "rootfs": {"type": "layers", "diff_ids": [sha(t) for t in tars]}}).encode()
    iid = store.add_image(b"{}", config, [(sha(blobs[0]), DOCKER_TAR), (sha(blobs[1]), GZ), (sha(blobs[2]), DOCKER_TAR)])
    store.meta.delete_lease(lease)
    assert sorted(os.listdir(store.snapshots.snapshots_dir)) == before  # nothing unpacked twice
    spec = store.prepare_rootfs("imp", iid)
    assert sorted(os.listdir(spec.rootfs)) == ["app", "bin", "etc"]
    assert os.listdir(os.path.join(spec.rootfs, "etc")) == []

    class Unread(io.RawIOBase):
        def read(self, n=-1):  # pragma: no cover - must not be called
            raise AssertionError("an already stored layer is not read again")

    assert store.import_layer(Unread(), GZ, expected_digest=sha(blobs[1])) == (sha(blobs[1]), sha(tars[1]))


def test_import_layer_failure_leaves_nothing(store):
    tar = make_tar({"f": os.urandom(100_000)})
    blob = gzip.compress(tar)
    for kwargs, src in (({"expected_digest": sha(b"x")}, blob), ({"expected_diff_id": sha(b"x")}, blob),
                        ({}, blob[: len(blob) // 2])):
        with pytest.raises(InvalidImage) as e:
            store.import_layer(io.BytesIO(src), GZ, **kwargs)
        assert "\n" not in str(e.value)
    assert list(store.content.digests()) == []
    assert os.listdir(store.content.ingest_dir) == []
    assert [d for d in os.listdir(store.snapshots.snapshots_dir) if d != "empty"] == []
    assert store.meta.layers() == []
