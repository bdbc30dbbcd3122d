"""Image archives: ``load`` docker-archives and OCI image layouts, ``save`` them, ``import``
a root filesystem tarball.

Load reads the archive once, front to back (it may come from a pipe, and may be gzip,
zstd, xz or bzip2 compressed as a whole). Layer members go through in-memory pipes
(``pipe``) into ``ImageStore.import_layer`` on a thread pool, so several layers unpack
at once while the archive is still being read; each layer's blob is stored and its
digests computed in the same pass. What a member is becomes clear only from the
metadata, which docker writes last, so members are recognised by name and content:
``<id>/layer.tar`` (docker < 25), ``blobs/<alg>/<hex>`` that is not JSON (Docker 25+,
OCI layouts), JSON documents kept in memory. At the end the metadata
(``manifest.json``, else ``index.json``) says which layers make which image; the
computed digests are checked against the manifests and configs, and only when every
image is complete is anything recorded. A failed load records nothing and the layers it
unpacked are garbage-collected.

Save writes what Docker 25+ writes: a docker-archive (``manifest.json``, ``repositories``)
that is also an OCI image layout (``oci-layout``, ``index.json``, ``blobs/sha256``), so
``docker load`` of any version, skopeo and umoci all read it. Blobs are written as
stored (compressed layers stay compressed); manifests with Docker media types are
rewritten as OCI manifests (same config, same layers: the image ID does not change).
Metadata comes first in the tar, so a streaming loader knows the layers before them.
"""
from __future__ import annotations

import io
import json
import os
import posixpath
import tarfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import BinaryIO, Callable

from . import changes as _changes
from . import platform as _platform
from . import reference as _ref
from .content import digest_of, split_digest
from .layers.compression import detect_compression
from .pipe import Budget, Pipe
from .store import Image, ImageError, ImageStore, InvalidImage

# progress(event, key, done, total): events "start", "progress", "done" per layer or blob.
Progress = Callable[[str, str, int, int], None]

MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
_LAYER_TYPES = {"none": MEDIA_OCI_LAYER, "gzip": MEDIA_OCI_LAYER + "+gzip", "zstd": MEDIA_OCI_LAYER + "+zstd",
                "xz": MEDIA_OCI_LAYER + "+xz", "bzip2": MEDIA_OCI_LAYER + "+bzip2"}
# Docker media types and their OCI equivalents (for OCI manifests made from Docker ones).
_TO_OCI = {
    "application/vnd.docker.container.image.v1+json": MEDIA_OCI_CONFIG,
    "application/vnd.docker.image.rootfs.diff.tar.gzip": MEDIA_OCI_LAYER + "+gzip",
    "application/vnd.docker.image.rootfs.diff.tar": MEDIA_OCI_LAYER,
    "application/vnd.docker.image.rootfs.diff.tar.zstd": MEDIA_OCI_LAYER + "+zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip":
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
}
ANNOTATION_NAME = "io.containerd.image.name"
ANNOTATION_REF = "org.opencontainers.image.ref.name"
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'

_CHUNK = 1 << 20
_DOC_MAX = 32 << 20           # a JSON document (manifest, config, index) is never this big
_PIPE_BUDGET = 32 << 20       # archive bytes read ahead of the unpackers, all layers together
_LINK_HOPS = 16


class ArchiveError(InvalidImage):
    """The archive is unreadable, incomplete or inconsistent (one line)."""


@dataclass
class LoadedImage:
    id: str
    tags: list[str] = field(default_factory=list)                   # familiar references
    replaced: list[tuple[str, str]] = field(default_factory=list)   # (tag, image it was moved from)


# ---------------------------------------------------------------------------------------------
# Input: a path or a stream, decompressed when the whole archive is compressed

class _Prefixed(io.RawIOBase):
    """A stream with bytes already read from it put back in front."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self.head, self.rest = head, rest

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self.head:
            data, self.head = (self.head, b"") if n < 0 or n >= len(self.head) else (self.head[:n], self.head[n:])
            return data
        return self.rest.read(n)

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)


def _sniffed(f: BinaryIO) -> tuple[str, BinaryIO]:
    """(compression, a stream giving the same bytes from the start)."""
    head = b""
    while len(head) < 10:
        more = f.read(10 - len(head))
        if not more:
            break
        head += more
    return detect_compression(head), _Prefixed(head, f)  # type: ignore[return-value]


def _decompressed(f: BinaryIO) -> BinaryIO:
    kind, stream = _sniffed(f)
    if kind == "gzip":
        from isal import igzip
        return igzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[return-value]
    if kind == "zstd":
        import zstandard
        return zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True)  # type: ignore[return-value]
    if kind == "xz":
        import lzma
        return lzma.LZMAFile(stream)  # type: ignore[return-value]
    if kind == "bzip2":
        import bz2
        return bz2.BZ2File(stream)  # type: ignore[return-value]
    return stream


# ---------------------------------------------------------------------------------------------
# Paths inside archives

def _clean(name: str) -> str | None:
    """A member or metadata path made relative and normal ("" for the top directory);
    None when it climbs out."""
    parts: list[str] = []
    for p in name.split("/"):
        if p in ("", "."):
            continue
        if p == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(p)
    return "/".join(parts)


def _blob_path(digest: str) -> str:
    alg, hexpart = split_digest(digest)
    return f"blobs/{alg}/{hexpart}"


def _digest_of_path(path: str) -> str | None:
    """``blobs/sha256/<hex>`` names its digest."""
    parts = path.split("/")
    if len(parts) == 3 and parts[0] == "blobs":
        try:
            split_digest(f"{parts[1]}:{parts[2]}")
        except ValueError:
            return None
        return f"{parts[1]}:{parts[2]}"
    return None


def _short(path: str) -> str:
    """What progress shows for a layer: 12 hex digits of its digest or legacy ID."""
    d = _digest_of_path(path)
    if d:
        return d.split(":", 1)[1][:12]
    return path.split("/", 1)[0][:12]


def _json(data: bytes, what: str) -> object:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ArchiveError(f"invalid {what}: {e}") from None


# ---------------------------------------------------------------------------------------------
# Where the loader finds documents and layers: a tar read once, or a directory

@dataclass
class _Layer:
    digest: str
    diff_id: str
    media_type: str


class _Source:
    """Documents (small JSON files) and imported layers by archive path."""

    def __init__(self, store: ImageStore, lease: str, progress: Progress | None) -> None:
        self.store = store
        self.lease = lease
        self._progress = progress
        self._plock = threading.Lock()
        self.docs: dict[str, bytes] = {}
        self.links: dict[str, str] = {}
        self.layers: dict[str, Future] = {}

    def progress(self, event: str, key: str, done: int, total: int) -> None:
        if self._progress is not None:
            with self._plock:
                self._progress(event, key, done, total)

    def resolve(self, path: str) -> str:
        for _ in range(_LINK_HOPS):
            if path not in self.links:
                return path
            path = self.links[path]
        raise ArchiveError(f"too many levels of links at {path}")

    def doc(self, path: str, what: str) -> bytes:
        path = self.resolve(path)
        if path not in self.docs:
            raise ArchiveError(f"missing {what} {path} in the archive")
        return self.docs[path]

    def layer(self, path: str) -> _Layer:
        path = self.resolve(path)
        fut = self.layers.get(path)
        if fut is None and path in self.docs:
            # A small blob taken for JSON by its first byte (a layer whose first entry's
            # name starts with "{"): it is a layer after all, and it is in memory.
            data = self.docs[path]
            fut = self.layers[path] = Future()
            try:
                fut.set_result(self._import(path, io.BytesIO(data), _LAYER_TYPES[detect_compression(data[:10])],
                                            len(data), _digest_of_path(path)))
            except ArchiveError as e:
                fut.set_exception(e)
        if fut is None:
            raise ArchiveError(f"missing layer {path} in the archive")
        return fut.result()

    def _import(self, path: str, src: object, media_type: str, size: int, expected: str | None) -> _Layer:
        key = _short(path)
        self.progress("start", key, 0, size)
        try:
            digest, diff_id = self.store.import_layer(
                src, media_type, expected_digest=expected, lease=self.lease,
                on_read=lambda done: self.progress("progress", key, done, size))
        except ImageError as e:
            raise ArchiveError(f"layer {path}: {e}") from None
        finally:
            if isinstance(src, Pipe):
                src.release()
        self.progress("done", key, size, size)
        return _Layer(digest, diff_id, media_type)


class _TarSource(_Source):
    """Reads the tar once; layer members are fed to unpackers on a thread pool."""

    def read(self, f: BinaryIO) -> None:
        budget = Budget(_PIPE_BUDGET)
        pipes: list[Pipe] = []
        layer_paths: set[str] | None = None   # known once a docker manifest.json came first
        with ThreadPoolExecutor(max_workers=self.store.workers, thread_name_prefix="load") as pool:
            try:
                try:
                    tar = tarfile.open(fileobj=f, mode="r|", bufsize=_CHUNK)
                    for m in tar:
                        path = _clean(m.name)
                        if path is None:
                            raise ArchiveError(f"invalid path {m.name!r} in the archive")
                        if not path:
                            continue
                        if m.issym() or m.islnk():
                            target = m.linkname if m.islnk() else posixpath.join(posixpath.dirname(path), m.linkname)
                            resolved = _clean(target)
                            if resolved is None:
                                raise ArchiveError(f"link {m.name!r} points out of the archive")
                            self.links[path] = resolved
                            continue
                        if not m.isfile():
                            continue
                        data = tar.extractfile(m)
                        assert data is not None
                        kind = self._kind(path, layer_paths)
                        if kind == "doc":
                            self.docs[path] = self._read_doc(data, m.size, path)
                            if path == "manifest.json":
                                layer_paths = self._docker_layer_paths()
                            continue
                        if kind == "skip":
                            continue
                        head = data.read(min(m.size, _CHUNK))
                        if kind == "blob" and m.size <= _DOC_MAX and head.lstrip()[:1] == b"{":
                            self.docs[path] = head + data.read()
                            continue
                        pipe = Pipe(budget)
                        pipes.append(pipe)
                        media_type = _LAYER_TYPES[detect_compression(head[:10])]
                        self.layers[path] = pool.submit(self._import, path, pipe, media_type, m.size,
                                                        _digest_of_path(path))
                        self._feed(pipe, head, data)
                except (tarfile.TarError, EOFError) as e:
                    raise ArchiveError(f"invalid archive: {_tar_error(e)}") from None
                except OSError as e:
                    # zlib/zstd/lzma report corrupt input as OSError or their own errors
                    raise ArchiveError(f"invalid archive: {e}") from None
            except BaseException:
                for p in pipes:
                    p.abort()
                raise

    @staticmethod
    def _kind(path: str, layer_paths: set[str] | None) -> str:
        if path in ("manifest.json", "index.json", "repositories", "oci-layout"):
            return "doc"
        if path.endswith("/layer.tar"):
            return "layer"
        if "/" not in path and path.endswith(".json"):
            return "doc"                       # docker < 25: <config hex>.json
        if _digest_of_path(path):
            if layer_paths is None:
                return "blob"                  # layer or document: decided by its content
            return "layer" if path in layer_paths else "doc"
        return "skip"                          # <id>/json, <id>/VERSION, unknown files

    def _docker_layer_paths(self) -> set[str] | None:
        try:
            items = json.loads(self.docs["manifest.json"])
            return {_clean(p) or "" for item in items for p in item.get("Layers") or []}
        except (ValueError, TypeError, AttributeError):
            return None    # reported properly when the metadata is read at the end

    @staticmethod
    def _read_doc(data: BinaryIO, size: int, path: str) -> bytes:
        if size > _DOC_MAX:
            raise ArchiveError(f"{path} is too large ({size} bytes) for a metadata file")
        return data.read()

    @staticmethod
    def _feed(pipe: Pipe, head: bytes, data: BinaryIO) -> None:
        """Copy the member into the pipe; stop early when the unpacker needs no more (it
        had the layer already, or failed): tarfile skips what is left."""
        chunk = head
        while chunk:
            pipe.write(chunk)
            if pipe.released:
                break
            chunk = data.read(_CHUNK)
        pipe.close()


def _tar_error(e: BaseException) -> str:
    msg = str(e) or type(e).__name__
    if msg in ("empty file", "unexpected end of data", "end of file header"):
        return "unexpected EOF"
    return msg


class _DirSource(_Source):
    """An unpacked archive or OCI layout directory: files are read where they are."""

    def __init__(self, store: ImageStore, lease: str, progress: Progress | None, root: str) -> None:
        super().__init__(store, lease, progress)
        self.root = root
        self.pool = ThreadPoolExecutor(max_workers=store.workers, thread_name_prefix="load")

    def _file(self, path: str) -> str | None:
        full = os.path.join(self.root, path)
        real = os.path.realpath(full)
        if not (real + "/").startswith(os.path.realpath(self.root) + "/") or not os.path.isfile(real):
            return None
        return real

    def doc(self, path: str, what: str) -> bytes:
        if path not in self.docs:
            f = self._file(path)
            if f is None:
                raise ArchiveError(f"missing {what} {path} in the archive")
            if os.path.getsize(f) > _DOC_MAX:
                raise ArchiveError(f"{path} is too large for a metadata file")
            with open(f, "rb") as fh:
                self.docs[path] = fh.read()
        return self.docs[path]

    def has_doc(self, path: str) -> bool:
        return self._file(path) is not None

    def start(self, paths: list[str]) -> None:
        """Import these layers in parallel."""
        for path in paths:
            if path in self.layers:
                continue
            f = self._file(path)
            if f is None:
                continue
            with open(f, "rb") as fh:
                media_type = _LAYER_TYPES[detect_compression(fh.read(10))]
            self.layers[path] = self.pool.submit(self._import, path, f, media_type, os.path.getsize(f),
                                                 _digest_of_path(path))

    def close(self) -> None:
        self.pool.shutdown(wait=True)


# ---------------------------------------------------------------------------------------------
# Metadata: which images the archive holds

@dataclass
class _Spec:
    config_path: str
    layer_paths: list[str]
    refs: list[_ref.Reference]
    manifest: bytes | None = None         # the image's own manifest when the archive has it


def _docker_specs(src: _Source, oci_manifests: dict[str, bytes]) -> list[_Spec]:
    items = _json(src.doc("manifest.json", "manifest"), "manifest.json")
    if not isinstance(items, list):
        raise ArchiveError("invalid manifest.json: not a list")
    specs = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("Config"), str) or \
                not isinstance(item.get("Layers"), list):
            raise ArchiveError("invalid manifest.json: an entry lacks Config or Layers")
        config = _clean(item["Config"])
        layers = [_clean(p) if isinstance(p, str) else None for p in item["Layers"]]
        if config is None or None in layers:
            raise ArchiveError("invalid manifest.json: a path points out of the archive")
        refs = []
        for tag in item.get("RepoTags") or []:
            try:
                refs.append(_ref.parse(tag))
            except ValueError as e:
                raise ArchiveError(f"invalid tag {tag!r} in manifest.json: {e}") from None
        config_digest = digest_of(src.doc(config, "image config"))
        specs.append(_Spec(config, layers, refs, oci_manifests.get(config_digest)))  # type: ignore[arg-type]
    return specs


def _oci_manifests(src: _Source) -> list[tuple[bytes, dict]]:
    """(manifest bytes, index descriptor) of the images index.json names, following
    nested indexes to the host's platform."""
    index = _json(src.doc("index.json", "index"), "index.json")
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise ArchiveError("invalid index.json: no manifests")
    out = []
    todo = [(d, 0) for d in index["manifests"]]
    while todo:
        desc, depth = todo.pop(0)
        if not isinstance(desc, dict) or not isinstance(desc.get("digest"), str):
            raise ArchiveError("invalid index.json: a descriptor has no digest")
        try:
            path = _blob_path(desc["digest"])
        except ValueError as e:
            raise ArchiveError(f"invalid index.json: {e}") from None
        data = src.doc(path, "manifest")
        if digest_of(data) != desc["digest"] and desc["digest"].startswith("sha256:"):
            raise ArchiveError(f"digest mismatch for {path}: the blob is {digest_of(data)}")
        doc = _json(data, f"manifest {desc['digest']}")
        if not isinstance(doc, dict):
            raise ArchiveError(f"invalid manifest {desc['digest']}")
        media_type = doc.get("mediaType") or desc.get("mediaType")
        if media_type in (MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST) or "manifests" in doc:
            if depth > 3:
                raise ArchiveError("indexes nested too deep in the archive")
            entries = doc.get("manifests") or []
            try:
                chosen = _platform.select(entries)
            except _platform.PlatformError as e:
                raise ArchiveError(str(e)) from None
            todo.append(({**chosen, "annotations": desc.get("annotations") or {}}, depth + 1))
            continue
        out.append((data, desc))
    return out


def _layout_specs(src: _Source) -> list[_Spec]:
    specs = []
    for data, desc in _oci_manifests(src):
        doc = json.loads(data)
        try:
            config = _blob_path(doc["config"]["digest"])
            layers = [_blob_path(layer["digest"]) for layer in doc["layers"]]
        except (KeyError, TypeError, ValueError):
            raise ArchiveError(f"invalid manifest {desc['digest']}: no config or layers") from None
        refs = []
        annotations = desc.get("annotations") or {}
        name = annotations.get(ANNOTATION_NAME)
        if isinstance(name, str):
            try:
                refs.append(_ref.parse(name))
            except ValueError:
                pass
        specs.append(_Spec(config, layers, refs, data))
    return specs


def _manifests_by_config(src: _Source) -> dict[str, bytes]:
    """Docker 25+ archives carry each image's OCI manifest: keep it (its digest too)."""
    try:
        found = _oci_manifests(src)
    except ArchiveError:
        return {}
    out = {}
    for data, _desc in found:
        try:
            out[json.loads(data)["config"]["digest"]] = data
        except (KeyError, TypeError, ValueError):
            continue
    return out


def _specs(src: _Source, has: Callable[[str], bool]) -> list[_Spec]:
    if has("manifest.json"):
        return _docker_specs(src, _manifests_by_config(src) if has("index.json") else {})
    if has("index.json"):
        return _layout_specs(src)
    raise ArchiveError("invalid archive: no manifest.json or index.json (not a docker-archive or OCI layout)")


# ---------------------------------------------------------------------------------------------
# Recording what was loaded

@dataclass
class _Ready:
    manifest: bytes
    config: bytes
    layers: list[tuple[str, str]]
    refs: list[_ref.Reference]


def _check(src: _Source, spec: _Spec) -> _Ready:
    """Everything the image needs is there and matches its manifest and config."""
    config_bytes = src.doc(spec.config_path, "image config")
    config = _json(config_bytes, f"image config {spec.config_path}")
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list):
        raise ArchiveError(f"invalid image config {spec.config_path}: no rootfs.diff_ids")
    if len(diff_ids) != len(spec.layer_paths):
        raise ArchiveError(f"image config {spec.config_path} lists {len(diff_ids)} layers, "
                           f"the archive gives {len(spec.layer_paths)}")
    layers = [src.layer(p) for p in spec.layer_paths]
    for path, layer, want in zip(spec.layer_paths, layers, diff_ids):
        if layer.diff_id != want:
            raise ArchiveError(f"layer {path} does not match the image config: diff_id {layer.diff_id}, "
                               f"expected {want}")
    if spec.manifest is not None:
        doc = json.loads(spec.manifest)
        descs = doc.get("layers") or []
        if [d.get("digest") for d in descs] != [lay.digest for lay in layers]:
            raise ArchiveError(f"layers of manifest {digest_of(spec.manifest)} do not match the archive's")
        if (doc.get("config") or {}).get("digest") != digest_of(config_bytes):
            raise ArchiveError(f"manifest {digest_of(spec.manifest)} names another config")
        pairs = [(lay.digest, d.get("mediaType") or lay.media_type) for lay, d in zip(layers, descs)]
        return _Ready(spec.manifest, config_bytes, pairs, spec.refs)
    sized = [(lay.digest, lay.media_type, src.store.content.size(lay.digest)) for lay in layers]
    manifest = make_manifest(config_bytes, sized)
    return _Ready(manifest, config_bytes, [(lay.digest, lay.media_type) for lay in layers], spec.refs)


def make_manifest(config: bytes, layers: list[tuple[str, str, int]]) -> bytes:
    """An OCI manifest for a config and its layers (blob digest, media type, size)."""
    doc = {"schemaVersion": 2, "mediaType": MEDIA_OCI_MANIFEST,
           "config": {"mediaType": MEDIA_OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
           "layers": [{"mediaType": mt, "digest": d, "size": s} for d, mt, s in layers]}
    return json.dumps(doc, separators=(",", ":")).encode()


def _record(store: ImageStore, ready: list[_Ready]) -> list[LoadedImage]:
    out = []
    for r in ready:
        image_id = store.add_image(r.manifest, r.config, r.layers)
        loaded = LoadedImage(image_id)
        for ref in r.refs:
            old = store.meta.tag_target(str(ref))
            if old is not None and old != image_id:
                loaded.replaced.append((ref.familiar(), old))
            store.tag(image_id, ref)
            loaded.tags.append(ref.familiar())
        out.append(loaded)
    return out


def load(store: ImageStore, src: str | BinaryIO, *, progress: Progress | None = None) -> list[LoadedImage]:
    """Load every image of a docker-archive or OCI layout: ``src`` is a path (a tar file,
    possibly compressed, or a directory) or a binary stream. Returns what was loaded.
    Raises ArchiveError (nothing recorded, nothing left behind) when the archive is bad."""
    lease = store.meta.create_lease(None, 6 * 3600.0)
    ok = False
    try:
        if isinstance(src, str) and os.path.isdir(src):
            dsrc = _DirSource(store, lease, progress, src)
            try:
                specs = _specs(dsrc, dsrc.has_doc)
                dsrc.start([dsrc.resolve(p) for s in specs for p in s.layer_paths])
                ready = [_check(dsrc, s) for s in specs]
            finally:
                dsrc.close()
        else:
            tsrc = _TarSource(store, lease, progress)
            if isinstance(src, str):
                with open(src, "rb") as f:
                    tsrc.read(_decompressed(f))
            else:
                tsrc.read(_decompressed(src))
            specs = _specs(tsrc, lambda p: tsrc.resolve(p) in tsrc.docs)
            ready = [_check(tsrc, s) for s in specs]
        if not ready:
            raise ArchiveError("the archive holds no image")
        loaded = _record(store, ready)
        ok = True
        return loaded
    finally:
        store.meta.delete_lease(lease)
        if not ok:
            store.gc()


# ---------------------------------------------------------------------------------------------
# Save

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
    if (doc.get("mediaType") or MEDIA_OCI_MANIFEST) == MEDIA_OCI_MANIFEST and not any(t in _TO_OCI for t in types):
        return raw
    config = dict(doc.get("config") or {})
    config["mediaType"] = MEDIA_OCI_CONFIG
    layers = []
    for layer in doc.get("layers") or []:
        layer = dict(layer)
        layer["mediaType"] = _TO_OCI.get(layer.get("mediaType"), layer.get("mediaType"))
        layers.append(layer)
    new = {"schemaVersion": 2, "mediaType": MEDIA_OCI_MANIFEST, "config": config, "layers": layers}
    if doc.get("annotations"):
        new["annotations"] = doc["annotations"]
    return json.dumps(new, separators=(",", ":")).encode()


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
        docs[_blob_path(mdigest)] = manifest
        docs[_blob_path(img.id)] = store.content.read(img.id)
        for lay in img.layers:
            if not store.content.has(lay.digest):
                raise ImageError(f"blob {lay.digest} of image {img.short_id} is missing from the store")
            layers.setdefault(lay.digest, (_blob_path(lay.digest), lay.digest, store.content.size(lay.digest)))
        desc: dict = {"mediaType": MEDIA_OCI_MANIFEST, "digest": mdigest, "size": len(manifest)}
        plat = {k: img.config[k] for k in ("architecture", "os", "variant") if img.config.get(k)}
        if plat:
            desc["platform"] = plat
        for ref in item.refs:
            index_entries.append({**desc, "annotations": {ANNOTATION_NAME: str(ref), ANNOTATION_REF: ref.tag}})
            repositories.setdefault(ref.familiar_name(), {})[ref.tag or ""] = img.diff_ids[-1].split(":", 1)[1]
        if not item.refs:
            index_entries.append(desc)
        docker_items.append({"Config": _blob_path(img.id), "RepoTags": [r.familiar() for r in item.refs] or None,
                             "Layers": [_blob_path(lay.digest) for lay in img.layers]})
    index = {"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": index_entries}
    layout = [("oci-layout", OCI_LAYOUT), ("index.json", _compact(index))]
    if docker:
        layout.append(("manifest.json", _compact(docker_items)))
        if repositories:
            layout.append(("repositories", _compact(repositories)))
    return _SavePlan(layout, list(docs.items()), list(layers.values()))


def _compact(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


class _TarWriter:
    """A plain tar written straight to a file descriptor (sendfile for blobs) or a stream."""

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
        info = tarfile.TarInfo(name + "/" if directory else name)
        info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
        info.mode = 0o755 if directory else 0o644
        info.size = size
        info.mtime = 0       # reproducible: the same images give the same archive
        self._write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def _pad(self, size: int) -> None:
        if size % tarfile.BLOCKSIZE:
            self._write(bytes(tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE))

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
                        n = os.sendfile(self.fd, f.fileno(), done, min(size - done, 8 * _CHUNK))  # type: ignore[arg-type]
                    except OSError:
                        use_sendfile = False   # not supported between these two: copy through memory
                        continue
                else:
                    f.seek(done)
                    chunk = f.read(min(size - done, _CHUNK))
                    self._write(chunk)
                    n = len(chunk)
                if n == 0:
                    raise ImageError(f"blob {path} shrank while it was being saved")
                done += n
                on_progress(done)
        self._pad(size)

    def close(self) -> None:
        self._write(bytes(2 * tarfile.BLOCKSIZE))
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
            n = os.copy_file_range(fi.fileno(), fo.fileno(), min(size - done, 8 * _CHUNK))
            if n == 0:
                raise ImageError(f"blob {src} shrank while it was being saved")
            done += n
            on_progress(done)
    os.replace(tmp, dst)


# ---------------------------------------------------------------------------------------------
# Import a root filesystem

def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def import_rootfs(store: ImageStore, src: str | BinaryIO, *, reference: str | None = None,
                  changes: list[str] | tuple[str, ...] = (), message: str = "", platform: str | None = None,
                  progress: Progress | None = None) -> str:
    """``docker import``: a root filesystem tarball (plain or compressed) becomes an image of
    one layer, its blob stored as given; returns the image ID. ``changes`` are Dockerfile
    instructions for the config (CMD, ENV, ...); ``reference`` tags the image."""
    ref = _ref.parse(reference) if reference else None
    try:
        config = _changes.apply({}, list(changes))
    except _changes.ChangeError as e:
        raise InvalidImage(str(e)) from None
    plat = _platform.coerce(platform)
    comment = message or "Imported from -"
    with store.lease() as lease:
        opened = open(src, "rb") if isinstance(src, str) else None
        try:
            kind, stream = _sniffed(opened or src)  # type: ignore[arg-type]
            size = os.fstat(opened.fileno()).st_size if opened else 0
            if progress:
                progress("start", "rootfs", 0, size)
            digest, diff_id = store.import_layer(
                stream, _LAYER_TYPES[kind], lease=lease,
                on_read=(lambda done: progress("progress", "rootfs", done, size)) if progress else None)
        finally:
            if opened:
                opened.close()
        if progress:
            progress("done", "rootfs", size, size)
        created = _now()
        cfg = {"architecture": plat.architecture, "os": plat.os, "config": config, "created": created,
               "comment": comment, "history": [{"created": created, "comment": comment}],
               "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
        if plat.variant:
            cfg["variant"] = plat.variant
        config_bytes = json.dumps(cfg, separators=(",", ":")).encode()
        manifest = make_manifest(config_bytes, [(digest, _LAYER_TYPES[kind], store.content.size(digest))])
        image_id = store.add_image(manifest, config_bytes, [(digest, _LAYER_TYPES[kind])])
    if ref is not None:
        store.tag(image_id, ref)
    return image_id
