"""load / save / import with real archives: docker-archives as docker < 25 and Docker 25+
write them, OCI layouts (tar and directory), compressed archives, archives read from a
pipe; bad archives leave nothing behind; save output is readable again and reproducible."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile

import pytest
import zstandard

from registry_fixtures import *  # noqa: F401,F403 - fixtures (remove_tmp_path_after)
from registry_fixtures import build_image, write_oci_layout

from sampan.image import archive, changes
from sampan.image.archive import ArchiveError
from sampan.image.store import ImageStore


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(files: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in sorted(files.items()):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), 0o755, 1700000000
            t.addfile(ti, io.BytesIO(data))
        for name, target in sorted((symlinks or {}).items()):
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname = tarfile.SYMTYPE, target
            t.addfile(ti)
    return buf.getvalue()


def config_for(layers: list[bytes], cmd=("sh",), **extra) -> bytes:
    diff_ids = [sha256(gzip.decompress(x) if x[:2] == b"\x1f\x8b" else x) for x in layers]
    cfg = {"architecture": "amd64", "os": "linux", "config": {"Cmd": list(cmd)}, "created": "2024-01-02T03:04:05Z",
           "rootfs": {"type": "layers", "diff_ids": diff_ids}, **extra}
    return json.dumps(cfg).encode()


def tar_of(entries: list[tuple[str, object]]) -> bytes:
    """entries: (name, bytes) files, (name, ("symlink", target)), (name, None) directories."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for name, data in entries:
            ti = tarfile.TarInfo(name)
            if data is None:
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                t.addfile(ti)
            elif isinstance(data, tuple):
                ti.type, ti.linkname = tarfile.SYMTYPE, data[1]
                t.addfile(ti)
            else:
                ti.size, ti.mode = len(data), 0o644
                t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def legacy_archive(images: list[tuple[list[str], list[bytes]]]) -> bytes:
    """What docker < 25 saves: <v1 id>/layer.tar (a layer seen before is a symlink to its
    first copy), <config hex>.json, manifest.json and repositories last."""
    entries: list[tuple[str, object]] = []
    items, repos, seen = [], {}, {}
    for n, (tags, layers) in enumerate(images):
        config = config_for(layers)
        paths = []
        for i, layer in enumerate(layers):
            v1 = hashlib.sha256(f"{n}-{i}".encode()).hexdigest()
            entries += [(f"{v1}/", None), (f"{v1}/VERSION", b"1.0"), (f"{v1}/json", b'{"id":"%s"}' % v1.encode())]
            if layer in seen:
                entries.append((f"{v1}/layer.tar", ("symlink", f"../{seen[layer]}/layer.tar")))
            else:
                entries.append((f"{v1}/layer.tar", layer))
                seen[layer] = v1
            paths.append(f"{v1}/layer.tar")
        entries.append((f"{sha256(config)[7:]}.json", config))
        items.append({"Config": f"{sha256(config)[7:]}.json", "RepoTags": tags, "Layers": paths})
        for t in tags:
            name, _, tag = t.rpartition(":")
            repos.setdefault(name, {})[tag] = paths[-1].split("/")[0]
    entries.sort(key=lambda e: e[0])
    entries += [("manifest.json", json.dumps(items).encode()), ("repositories", json.dumps(repos).encode())]
    return tar_of(entries)


def docker25_archive(tags: list[str], layers: list[bytes]) -> tuple[bytes, str]:
    """What Docker 25+ saves: uncompressed layers as blobs, an OCI manifest and index, the
    metadata after the blobs (sorted names). Returns (archive, manifest digest)."""
    config = config_for(layers)
    blobs = {sha256(x): x for x in [config, *layers]}
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": sha256(config), "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(x),
                                       "size": len(x)} for x in layers]}).encode()
    blobs[sha256(manifest)] = manifest
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256(manifest),
                            "size": len(manifest),
                            "annotations": {"io.containerd.image.name": f"docker.io/library/{t}",
                                            "org.opencontainers.image.ref.name": t.split(":")[1]}}
                           for t in tags]}
    items = [{"Config": f"blobs/sha256/{sha256(config)[7:]}", "RepoTags": tags,
              "Layers": [f"blobs/sha256/{sha256(x)[7:]}" for x in layers]}]
    entries: list[tuple[str, object]] = [("blobs/", None), ("blobs/sha256/", None)]
    entries += sorted((f"blobs/sha256/{d[7:]}", b) for d, b in blobs.items())
    entries += [("index.json", json.dumps(index).encode()), ("manifest.json", json.dumps(items).encode()),
                ("oci-layout", b'{"imageLayoutVersion": "1.0.0"}')]
    return tar_of(entries), sha256(manifest)


@pytest.fixture
def store(tmp_path):
    s = ImageStore(str(tmp_path / "root"))
    yield s
    s.close()


def read_rootfs(store: ImageStore, image: str, paths: list[str]) -> dict[str, bytes]:
    spec = store.prepare_rootfs("check", image)
    try:
        return {p: open(os.path.join(spec.rootfs, p), "rb").read() for p in paths}
    finally:
        store.snapshots.remove("check")


def assert_nothing_left(store: ImageStore) -> None:
    assert store.list() == []
    assert store.meta.all_refs() == []
    assert list(store.content.digests()) == []
    assert store.meta.leases() == []
    assert store.meta.layers() == []
    assert os.listdir(store.snapshots.snapshots_dir) == []
    ingest = store.content.ingest_dir
    assert not os.path.isdir(ingest) or os.listdir(ingest) == []


def stored_image(store: ImageStore, tag: str, **kw) -> str:
    img = build_image(store.content, **kw)
    image_id = store.add_image(img.manifest, store.content.read(img.config_digest),
                               [(d, mt) for d, mt, _ in img.layers])
    store.tag(image_id, tag)
    return image_id


# ---------------------------------------------------------------------------------------------
# docker-archives as docker writes them

def test_load_legacy_docker_archive_with_shared_layers(store):
    base = layer_tar({"bin/tool": b"#!/bin/sh\necho base\n", "etc/os": b"base\n"})
    app1 = layer_tar({"app/one": b"1" * 5000})
    app2 = layer_tar({"app/two": b"2" * 7000}, {"app/link": "two"})
    data = legacy_archive([(["one:latest", "one:v1"], [base, app1]), (["two:latest"], [base, app2])])
    loaded = archive.load(store, io.BytesIO(data))
    assert [img.tags for img in loaded] == [["one:latest", "one:v1"], ["two:latest"]]
    one, two = store.resolve("one"), store.resolve("two:latest")
    assert one.id == sha256(config_for([base, app1]))            # the image ID is the config digest
    assert one.diff_ids[0] == two.diff_ids[0] == sha256(base)
    assert read_rootfs(store, "two", ["etc/os", "app/two"]) == {"etc/os": b"base\n", "app/two": b"2" * 7000}
    assert store.meta.one("SELECT count(*) FROM layers")[0] == 3
    # the manifest made for it is an OCI one naming the layers as stored (uncompressed)
    manifest = json.loads(store.content.read(one.manifest_digest))
    assert [x["mediaType"] for x in manifest["layers"]] == ["application/vnd.oci.image.layer.v1.tar"] * 2


def test_load_docker25_archive_keeps_the_manifest(store):
    layers = [layer_tar({"a": b"a" * 100}), layer_tar({"b": b"b" * 200})]
    data, manifest_digest = docker25_archive(["web:1"], layers)
    loaded = archive.load(store, io.BytesIO(data))
    assert loaded[0].tags == ["web:1"]
    img = store.resolve("web:1")
    assert img.manifest_digest == manifest_digest
    assert read_rootfs(store, "web:1", ["a", "b"]) == {"a": b"a" * 100, "b": b"b" * 200}


def test_load_docker25_layer_that_looks_like_json(store):
    """Docker 25+ writes the metadata last: a layer whose first entry is named "{..." is first
    taken for a JSON document, and still loads as the layer it is."""
    layers = [layer_tar({"{curly}": b"x" * 10, "~tail": b"z"})]
    assert layers[0].startswith(b"{curly}")
    data, _ = docker25_archive(["odd:1"], layers)
    assert archive.load(store, io.BytesIO(data))[0].tags == ["odd:1"]
    assert read_rootfs(store, "odd:1", ["{curly}"]) == {"{curly}": b"x" * 10}


def test_loading_again_reuses_layers_and_retags(store):
    data, _ = docker25_archive(["web:1"], [layer_tar({"a": b"x"})])
    first = archive.load(store, io.BytesIO(data))
    other, _ = docker25_archive(["web:1"], [layer_tar({"a": b"y"})])
    second = archive.load(store, io.BytesIO(other))
    assert second[0].replaced == [("web:1", first[0].id)]
    again = archive.load(store, io.BytesIO(data))
    assert again[0].id == first[0].id and again[0].replaced == [("web:1", second[0].id)]


# ---------------------------------------------------------------------------------------------
# save, and load of what we saved

def test_save_then_load_in_another_store(store, tmp_path):
    image_id = stored_image(store, "app:1", layer_sizes=(3000, 200000, 1000))
    store.tag(image_id, "app:2")
    out = io.BytesIO()
    archive.save(store, ["app"], out)            # a name alone: every tag of the repository
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as t:
        names = t.getnames()
        items = json.load(t.extractfile("manifest.json"))
        index = json.load(t.extractfile("index.json"))
    assert names[:4] == ["oci-layout", "index.json", "manifest.json", "repositories"]
    assert sorted(items[0]["RepoTags"]) == ["app:1", "app:2"]
    assert items[0]["Config"] == f"blobs/sha256/{image_id[7:]}"
    assert {m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]} == {"1", "2"}
    other = ImageStore(str(tmp_path / "other"))
    loaded = archive.load(other, io.BytesIO(out.getvalue()))
    assert loaded[0].id == image_id and sorted(loaded[0].tags) == ["app:1", "app:2"]
    # the Docker manifest was rewritten with OCI media types; config and layers are the same
    manifest = json.loads(other.content.read(other.resolve("app:1").manifest_digest))
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert {x["mediaType"] for x in manifest["layers"]} == {"application/vnd.oci.image.layer.v1.tar+gzip"}
    assert other.resolve("app:1").diff_ids == store.resolve("app:1").diff_ids
    other.close()


def test_save_is_reproducible_and_by_id_has_no_tags(store):
    image_id = stored_image(store, "app:1", oci=True)
    a, b = io.BytesIO(), io.BytesIO()
    archive.save(store, ["app:1"], a)
    archive.save(store, ["app:1"], b)
    assert a.getvalue() == b.getvalue()
    c = io.BytesIO()
    archive.save(store, [image_id[7:19]], c)
    with tarfile.open(fileobj=io.BytesIO(c.getvalue())) as t:
        assert json.load(t.extractfile("manifest.json"))[0]["RepoTags"] is None
        index = json.load(t.extractfile("index.json"))
    # an OCI manifest is saved as stored: its digest does not change
    assert index["manifests"][0]["digest"] == store.resolve("app:1").manifest_digest


def test_save_oci_archive(store, tmp_path):
    image_id = stored_image(store, "app:1")
    out = io.BytesIO()
    archive.save(store, ["app:1"], out, fmt="oci-archive")
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as t:
        assert "manifest.json" not in t.getnames() and "index.json" in t.getnames()
    other = ImageStore(str(tmp_path / "other"))
    assert archive.load(other, io.BytesIO(out.getvalue()))[0].tags == ["app:1"]
    assert other.resolve("app:1").id == image_id
    other.close()


def test_save_to_a_real_file_and_a_pipe(store, tmp_path):
    image_id = stored_image(store, "app:1", layer_sizes=(1 << 20, 3 << 20))
    path = tmp_path / "app.tar"
    with open(path, "wb") as f:                  # a file descriptor: blobs go through sendfile
        archive.save(store, ["app:1"], f)
    r, w = os.pipe()
    with open(tmp_path / "piped.tar", "wb") as sink:
        reader = subprocess.Popen(["cat"], stdin=r, stdout=sink)
    os.close(r)
    with os.fdopen(w, "wb") as wf:
        archive.save(store, ["app:1"], wf)
    assert reader.wait() == 0
    assert (tmp_path / "piped.tar").read_bytes() == path.read_bytes()
    other = ImageStore(str(tmp_path / "other"))
    assert archive.load(other, str(path))[0].id == image_id
    other.close()


@pytest.mark.parametrize("compress", ["gzip", "zstd"])
def test_load_compressed_archive(store, compress):
    data, _ = docker25_archive(["z:1"], [layer_tar({"f": b"data" * 1000})])
    packed = gzip.compress(data) if compress == "gzip" else zstandard.ZstdCompressor().compress(data)
    assert archive.load(store, io.BytesIO(packed))[0].tags == ["z:1"]


# ---------------------------------------------------------------------------------------------
# OCI layouts

def test_load_oci_layout_directory_and_tar(store, tmp_path):
    src = ImageStore(str(tmp_path / "src"))
    img = build_image(src.content, oci=True, layer_sizes=(5000, 9000))
    layout = tmp_path / "layout"
    write_oci_layout(src.content, str(layout), img, "v1")
    index = json.loads((layout / "index.json").read_text())
    index["manifests"][0]["annotations"]["io.containerd.image.name"] = "example.com/team/app:v1"
    (layout / "index.json").write_text(json.dumps(index))
    loaded = archive.load(store, str(layout))
    assert loaded[0].tags == ["example.com/team/app:v1"]
    assert store.resolve("example.com/team/app:v1").manifest_digest == img.digest
    tar_path = tmp_path / "layout.tar"
    subprocess.run(["tar", "-C", str(layout), "-cf", str(tar_path), "."], check=True)
    other = ImageStore(str(tmp_path / "other"))
    assert archive.load(other, str(tar_path))[0].id == loaded[0].id
    other.close()
    src.close()


def test_load_oci_layout_without_a_name_is_untagged(store, tmp_path):
    src = ImageStore(str(tmp_path / "src"))
    img = build_image(src.content, oci=True)
    write_oci_layout(src.content, str(tmp_path / "layout"), img, "latest")
    loaded = archive.load(store, str(tmp_path / "layout"))
    assert loaded[0].tags == [] and store.get(loaded[0].id).dangling
    src.close()


def test_save_oci_dir(store, tmp_path):
    image_id = stored_image(store, "app:1")
    target = tmp_path / "oci"
    archive.save_dir(store, ["app:1"], str(target))
    assert json.loads((target / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((target / "index.json").read_text())
    manifest = json.loads((target / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_bytes())
    assert manifest["config"]["digest"] == image_id
    for d in [manifest["config"]["digest"]] + [x["digest"] for x in manifest["layers"]]:
        assert sha256((target / "blobs/sha256" / d[7:]).read_bytes()) == d
    other = ImageStore(str(tmp_path / "other"))
    assert archive.load(other, str(target))[0].id == image_id
    other.close()


# ---------------------------------------------------------------------------------------------
# Bad archives: one line, nothing recorded, nothing left behind

def _bad_archives() -> dict[str, bytes]:
    layers = [layer_tar({"a": os.urandom(300000)}), layer_tar({"b": b"b" * 100})]
    good, _ = docker25_archive(["bad:1"], layers)
    legacy = legacy_archive([(["bad:1"], layers)])
    config = config_for(layers)
    out = {
        "truncated in a layer": good[:len(good) // 2],
        "truncated legacy": legacy[:len(legacy) - 3000],
        "empty": b"",
        "not a tar": b"this is not an archive at all" * 40,
        "no metadata": tar_of([("hello.txt", b"hi")]),
        "malformed manifest.json": tar_of([("manifest.json", b"[{not json")]),
        "malformed config": tar_of([("c.json", b"{bad"), ("l/layer.tar", layers[0]),
                                    ("manifest.json", b'[{"Config":"c.json","RepoTags":["bad:1"],'
                                                      b'"Layers":["l/layer.tar"]}]')]),
        "missing layer": tar_of([(f"{sha256(config)[7:]}.json", config), ("l1/layer.tar", layers[0]),
                                 ("manifest.json", json.dumps([{"Config": f"{sha256(config)[7:]}.json",
                                                                "RepoTags": ["bad:1"],
                                                                "Layers": ["l1/layer.tar", "l2/layer.tar"]}]).encode())]),
        "layer not matching the config": legacy_archive([(["bad:1"], layers)]).replace(
            sha256(layers[1])[7:].encode(), b"0" * 64),
        "corrupt gzip layer": tar_of([(f"{sha256(config)[7:]}.json", config),
                                      ("l1/layer.tar", gzip.compress(layers[0])[:-40] + b"\0" * 40),
                                      ("l2/layer.tar", layers[1]),
                                      ("manifest.json", json.dumps([{"Config": f"{sha256(config)[7:]}.json",
                                                                     "RepoTags": ["bad:1"],
                                                                     "Layers": ["l1/layer.tar",
                                                                                "l2/layer.tar"]}]).encode())]),
        "path out of the archive": tar_of([("../evil", b"x")]),
    }
    # a blob whose content does not match the digest it is named by
    wrong = good.replace(layers[1], layers[1][:-600] + b"X" * 88 + layers[1][-512:])
    assert len(wrong) == len(good) and wrong != good
    out["wrong blob digest"] = wrong
    return out


@pytest.mark.parametrize("name", sorted(_bad_archives()))
def test_bad_archive_leaves_nothing(store, name):
    data = _bad_archives()[name]
    with pytest.raises(ArchiveError) as e:
        archive.load(store, io.BytesIO(data))
    assert "\n" not in str(e.value) and str(e.value)
    assert_nothing_left(store)


def test_bad_archive_keeps_what_was_there(store):
    image_id = stored_image(store, "keep:1")
    blobs = set(store.content.digests())
    with pytest.raises(ArchiveError, match="missing layer"):
        archive.load(store, io.BytesIO(tar_of([("c.json", config_for([b""])), ("manifest.json",
                     b'[{"Config":"c.json","RepoTags":["keep:1"],"Layers":["nope/layer.tar"]}]')])))
    assert store.resolve("keep:1").id == image_id
    assert set(store.content.digests()) == blobs


# ---------------------------------------------------------------------------------------------
# import

def test_import_rootfs_tarball(store, tmp_path):
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "hello").write_text("#!/bin/sh\necho hello\n")
    (root / "etc").mkdir()
    (root / "etc" / "motd").write_text("welcome\n")
    tarball = tmp_path / "rootfs.tar.gz"
    subprocess.run(["tar", "-C", str(root), "-czf", str(tarball), "."], check=True)
    image_id = archive.import_rootfs(store, str(tarball), reference="imported:1",
                                     changes=['CMD ["/bin/hello"]', "ENV A=1 B=two", "WORKDIR /etc",
                                              "EXPOSE 8080", "LABEL team=core"], message="from a test")
    img = store.resolve("imported:1")
    assert img.id == image_id
    cfg = img.config
    assert cfg["config"] == {"Cmd": ["/bin/hello"], "Env": ["A=1", "B=two"], "WorkingDir": "/etc",
                             "ExposedPorts": {"8080/tcp": {}}, "Labels": {"team": "core"}}
    assert cfg["comment"] == "from a test" and cfg["history"][0]["comment"] == "from a test"
    assert cfg["architecture"] == "amd64" and cfg["os"] == "linux"
    assert img.layers[0].media_type == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert img.layers[0].digest == sha256(tarball.read_bytes())         # the blob is stored as given
    assert read_rootfs(store, "imported:1", ["etc/motd"]) == {"etc/motd": b"welcome\n"}


def test_import_from_a_stream(store):
    data = layer_tar({"x": b"1"})
    image_id = archive.import_rootfs(store, io.BytesIO(data))
    img = store.get(image_id)
    assert img.dangling and img.diff_ids == [sha256(data)]
    assert img.config["comment"] == "Imported from -"


def test_import_refuses_unknown_change(store):
    with pytest.raises(Exception, match="ADD is not a valid change command"):
        archive.import_rootfs(store, io.BytesIO(layer_tar({"x": b"1"})), changes=["ADD . /"])


def test_changes():
    cfg = changes.apply({}, ["CMD echo hi", "ENTRYPOINT [\"/init\"]", "ENV PATH /usr/bin", "ENV A=\"x y\"",
                             "VOLUME /data /logs", "USER nobody", "STOPSIGNAL SIGINT", "ONBUILD RUN true"])
    assert cfg == {"Cmd": ["/bin/sh", "-c", "echo hi"], "Entrypoint": ["/init"], "Env": ["PATH=/usr/bin", "A=x y"],
                   "Volumes": {"/data": {}, "/logs": {}}, "User": "nobody", "StopSignal": "SIGINT",
                   "OnBuild": ["RUN true"]}
    with pytest.raises(changes.ChangeError):
        changes.apply({}, ["ENV"])
