"""``save``: images as a tar or an OCI image layout directory.

It writes what Docker 25+ writes: a docker-archive (``manifest.json``, ``repositories``)
that is also an OCI image layout (``oci-layout``, ``index.json``, ``blobs/sha256``), so
``docker load`` of any version, skopeo and umoci all read it. Blobs are written as stored
(compressed layers stay compressed); manifests with Docker media types are rewritten as
OCI manifests (same config, same layers: the image ID does not change). Metadata comes
first in the tar, so a streaming loader knows the layers before them. Every header is the
layer tar writer's (layers/tarwrite.py); blob data goes by sendfile when it can.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from typing import BinaryIO, Callable

from ...oci import mediatypes
from .. import reference as _ref
from ..content import digest_of
from ..layers.format import BLOCK
from ..layers.tarwrite import END_OF_ARCHIVE, padding, tar_header
from ..store import Image, ImageError, ImageStore
from .layout import ANNOTATION_NAME, ANNOTATION_REF, CHUNK, OCI_LAYOUT, Progress, blob_path, compact


@dataclass
class _SaveItem:
    image: Image
    refs: list[_ref.Reference] = field(default_factory=list)   # tags to name it by


def _select(store: ImageStore, names: list[str]) -> list[_SaveItem]:
    """The images to save and their tags, as docker save picks them: ``name`` alone means
    every tag of that repository, ``name:tag`` that tag, an ID or digest no tag."""
    items: dict[str, _SaveItem] = {}

    def add(img: Image, ref: _ref.Reference | None) -> None:
        item = items.setdefault(img.id, _SaveItem(img))
        if ref is not None and all(str(r) != str(ref) for r in item.refs):
            item.refs.append(ref)

    for name in names:
        try:
            r = _ref.parse(name, default_tag=False)
        except ValueError:
            r = None
        if r is not None and r.tag is None and r.digest is None:
            rows = [row for row in store.meta.all_refs() if row["repository"] == r.repository and row["tag"]]
            if rows:
                for row in rows:
                    add(store.get(row["image_id"]), _ref.parse(row["ref"]))
                continue
        img = store.resolve(name)
        add(img, r if r is not None and r.tag and store.meta.tag_target(str(r)) == img.id else None)
    return list(items.values())


def oci_manifest(store: ImageStore, img: Image) -> bytes:
    """The image's manifest with OCI media types: the stored one when it has them."""
    raw = store.content.read(img.manifest_digest)
    doc = json.loads(raw)
    types = [(doc.get("config") or {}).get("mediaType")] + [lay.get("mediaType") for lay in doc.get("layers") or []]
    if (doc.get("mediaType") or mediatypes.OCI_MANIFEST) == mediatypes.OCI_MANIFEST and \
            not any(t in mediatypes.TO_OCI for t in types):
        return raw
    config = dict(doc.get("config") or {})
    config["mediaType"] = mediatypes.OCI_CONFIG
    layers = []
    for layer in doc.get("layers") or []:
        layer = dict(layer)
        layer["mediaType"] = mediatypes.TO_OCI.get(layer.get("mediaType"), layer.get("mediaType"))
        layers.append(layer)
    new = {"schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST, "config": config, "layers": layers}
    if doc.get("annotations"):
        new["annotations"] = doc["annotations"]
    return compact(new)


@dataclass
class _SavePlan:
    layout: list[tuple[str, bytes]]                   # oci-layout, index.json (manifest.json, repositories)
    docs: list[tuple[str, bytes]]                     # manifest and config blobs
    layers: list[tuple[str, str, int]]                # (archive path, digest, size) of layer blobs


def _plan(store: ImageStore, names: list[str], docker: bool) -> _SavePlan:
    index_entries: list[dict] = []
    docker_items: list[dict] = []
    repositories: dict[str, dict[str, str]] = {}
    docs: dict[str, bytes] = {}
    layers: dict[str, tuple[str, str, int]] = {}
    for item in _select(store, names):
        img = item.image
        if not img.layers:
            raise ImageError(f"empty export - not implemented: {img.short_id} has no layers")
        manifest = oci_manifest(store, img)
        mdigest = digest_of(manifest)
        docs[blob_path(mdigest)] = manifest
        docs[blob_path(img.id)] = store.content.read(img.id)
        for lay in img.layers:
            if not store.content.has(lay.digest):
                raise ImageError(f"blob {lay.digest} of image {img.short_id} is missing from the store")
            layers.setdefault(lay.digest, (blob_path(lay.digest), lay.digest, store.content.size(lay.digest)))
        desc: dict = {"mediaType": mediatypes.OCI_MANIFEST, "digest": mdigest, "size": len(manifest)}
        plat = {k: img.config[k] for k in ("architecture", "os", "variant") if img.config.get(k)}
        if plat:
            desc["platform"] = plat
        for ref in item.refs:
            index_entries.append({**desc, "annotations": {ANNOTATION_NAME: str(ref), ANNOTATION_REF: ref.tag}})
            repositories.setdefault(ref.familiar_name(), {})[ref.tag or ""] = img.diff_ids[-1].split(":", 1)[1]
        if not item.refs:
            index_entries.append(desc)
        docker_items.append({"Config": blob_path(img.id), "RepoTags": [r.familiar() for r in item.refs] or None,
                             "Layers": [blob_path(lay.digest) for lay in img.layers]})
    index = {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": index_entries}
    layout = [("oci-layout", OCI_LAYOUT), ("index.json", compact(index))]
    if docker:
        layout.append(("manifest.json", compact(docker_items)))
        if repositories:
            layout.append(("repositories", compact(repositories)))
    return _SavePlan(layout, list(docs.items()), list(layers.values()))


class _TarWriter:
    """A plain tar written straight to a file descriptor (sendfile for blobs) or a stream,
    its headers made by ``tar_header``."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.fd: int | None = None
        try:
            out.flush()
            self.fd = out.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation):
            self.fd = None

    def _write(self, data: bytes | memoryview) -> None:
        if self.fd is None:
            self.out.write(data)
            return
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def _header(self, name: str, size: int, directory: bool = False) -> None:
        # mtime 0, owner 0: reproducible, the same images give the same archive
        path = name.encode("utf-8", "surrogateescape")
        if directory:
            self._write(tar_header(path + b"/", b"5", mode=0o755))
        else:
            self._write(tar_header(path, b"0", size=size, mode=0o644))

    def _pad(self, size: int) -> None:
        if size % BLOCK:
            self._write(padding(size))

    def add_dir(self, name: str) -> None:
        self._header(name, 0, directory=True)

    def add_bytes(self, name: str, data: bytes) -> None:
        self._header(name, len(data))
        self._write(data)
        self._pad(len(data))

    def add_file(self, name: str, path: str, size: int, on_progress: Callable[[int], None]) -> None:
        self._header(name, size)
        with open(path, "rb", buffering=0) as f:
            if os.fstat(f.fileno()).st_size != size:
                raise ImageError(f"blob {path} changed size while it was being saved")
            done = 0
            use_sendfile = self.fd is not None
            while done < size:
                n = 0
                if use_sendfile:
                    try:
                        n = os.sendfile(self.fd, f.fileno(), done, min(size - done, 8 * CHUNK))  # type: ignore[arg-type]
                    except OSError:
                        use_sendfile = False   # not supported between these two: copy through memory
                        continue
                else:
                    f.seek(done)
                    chunk = f.read(min(size - done, CHUNK))
                    self._write(chunk)
                    n = len(chunk)
                if n == 0:
                    raise ImageError(f"blob {path} shrank while it was being saved")
                done += n
                on_progress(done)
        self._pad(size)

    def close(self) -> None:
        self._write(END_OF_ARCHIVE)
        if self.fd is None:
            self.out.flush()


def save(store: ImageStore, names: list[str], out: BinaryIO, *, fmt: str = "docker-archive",
         progress: Progress | None = None) -> None:
    """Write the images (names, tags or IDs) as a tar to ``out``: ``docker-archive`` (also
    an OCI layout, as Docker 25+ writes) or ``oci-archive`` (the OCI layout alone).
    Metadata, manifests and configs come first: a streaming reader meets them before
    the layers."""
    if fmt not in ("docker-archive", "oci-archive"):
        raise ValueError(f"unknown archive format {fmt!r}")
    plan = _plan(store, names, docker=fmt == "docker-archive")
    w = _TarWriter(out)
    with store.lease(blobs=[d for _, d, _ in plan.layers]):
        for name, data in plan.layout:
            w.add_bytes(name, data)
        w.add_dir("blobs")
        w.add_dir("blobs/sha256")
        for name, data in plan.docs:
            w.add_bytes(name, data)
        for path, digest, size in plan.layers:
            _copy_blob(store, digest, size, progress, lambda src, cb, p=path, s=size: w.add_file(p, src, s, cb))
        w.close()


def save_dir(store: ImageStore, names: list[str], directory: str, *, progress: Progress | None = None) -> None:
    """Write the images as an OCI image layout directory (what ``umoci`` and skopeo's
    ``oci:`` read). Blobs already there are kept; ``index.json`` is replaced, last, so it
    never names a blob that is not there yet."""
    plan = _plan(store, names, docker=False)
    os.makedirs(os.path.join(directory, "blobs", "sha256"), exist_ok=True)
    with store.lease(blobs=[d for _, d, _ in plan.layers]):
        for name, data in plan.docs:
            _write_file(os.path.join(directory, name), data)
        for path, digest, size in plan.layers:
            target = os.path.join(directory, path)
            if os.path.isfile(target) and os.path.getsize(target) == size:
                continue
            _copy_blob(store, digest, size, progress, lambda src, cb, t=target: _copy_file(src, t, cb))
        for name, data in plan.layout:
            _write_file(os.path.join(directory, name), data)


def _copy_blob(store: ImageStore, digest: str, size: int, progress: Progress | None,
               copy: Callable[[str, Callable[[int], None]], None]) -> None:
    key = digest.split(":", 1)[1][:12]
    if progress:
        progress("start", key, 0, size)
    copy(store.content.path(digest), (lambda done: progress("progress", key, done, size)) if progress
         else (lambda done: None))
    if progress:
        progress("done", key, size, size)


def _write_file(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _copy_file(src: str, dst: str, on_progress: Callable[[int], None]) -> None:
    tmp = f"{dst}.tmp-{os.getpid()}"
    with open(src, "rb") as fi, open(tmp, "wb") as fo:
        size = os.fstat(fi.fileno()).st_size
        done = 0
        while done < size:
            n = os.copy_file_range(fi.fileno(), fo.fileno(), min(size - done, 8 * CHUNK))
            if n == 0:
                raise ImageError(f"blob {src} shrank while it was being saved")
            done += n
            on_progress(done)
    os.replace(tmp, dst)

