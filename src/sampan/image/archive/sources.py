"""Where ``load`` finds an archive's documents and layers: a tar read once, front to back
(``TarSource``: it may come from a pipe), or a directory (``DirSource``: an unpacked archive
or an OCI image layout). Layers are imported on a thread pool as they are met, each in one
pass (blob stored, layer unpacked, digests computed); documents are kept in memory.
"""
from __future__ import annotations

import io
import json
import os
import posixpath
import tarfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

from ...oci.mediatypes import OCI_LAYER_BY_COMPRESSION
from ..layers.compression import detect_compression
from ..pipe import Budget, Pipe
from ..store import ImageError, ImageStore
from .layout import CHUNK, DOC_MAX, ArchiveError, Progress, clean, digest_of_path

_PIPE_BUDGET = 32 << 20       # archive bytes read ahead of the unpackers, all layers together
_LINK_HOPS = 16


def _short(path: str) -> str:
    """What progress shows for a layer: 12 hex digits of its digest or legacy ID."""
    d = digest_of_path(path)
    if d:
        return d.split(":", 1)[1][:12]
    return path.split("/", 1)[0][:12]


@dataclass
class Layer:
    digest: str
    diff_id: str
    media_type: str


class Source:
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

    def layer(self, path: str) -> Layer:
        path = self.resolve(path)
        fut = self.layers.get(path)
        if fut is None and path in self.docs:
            # A small blob taken for JSON by its first byte (a layer whose first entry's
            # name starts with "{"): it is a layer after all, and it is in memory.
            data = self.docs[path]
            fut = self.layers[path] = Future()
            try:
                fut.set_result(self._import(path, io.BytesIO(data), OCI_LAYER_BY_COMPRESSION[detect_compression(data[:10])],
                                            len(data), digest_of_path(path)))
            except ArchiveError as e:
                fut.set_exception(e)
        if fut is None:
            raise ArchiveError(f"missing layer {path} in the archive")
        return fut.result()

    def _import(self, path: str, src: object, media_type: str, size: int, expected: str | None) -> Layer:
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
        return Layer(digest, diff_id, media_type)


class TarSource(Source):
    """Reads the tar once; layer members are fed to unpackers on a thread pool."""

    def read(self, f: BinaryIO) -> None:
        budget = Budget(_PIPE_BUDGET)
        pipes: list[Pipe] = []
        layer_paths: set[str] | None = None   # known once a docker manifest.json came first
        with ThreadPoolExecutor(max_workers=self.store.workers, thread_name_prefix="load") as pool:
            try:
                try:
                    tar = tarfile.open(fileobj=f, mode="r|", bufsize=CHUNK)
                    for m in tar:
                        path = clean(m.name)
                        if path is None:
                            raise ArchiveError(f"invalid path {m.name!r} in the archive")
                        if not path:
                            continue
                        if m.issym() or m.islnk():
                            target = m.linkname if m.islnk() else posixpath.join(posixpath.dirname(path), m.linkname)
                            resolved = clean(target)
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
                        head = data.read(min(m.size, CHUNK))
                        if kind == "blob" and m.size <= DOC_MAX and head.lstrip()[:1] == b"{":
                            self.docs[path] = head + data.read()
                            continue
                        pipe = Pipe(budget)
                        pipes.append(pipe)
                        media_type = OCI_LAYER_BY_COMPRESSION[detect_compression(head[:10])]
                        self.layers[path] = pool.submit(self._import, path, pipe, media_type, m.size,
                                                        digest_of_path(path))
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
        if digest_of_path(path):
            if layer_paths is None:
                return "blob"                  # layer or document: decided by its content
            return "layer" if path in layer_paths else "doc"
        return "skip"                          # <id>/json, <id>/VERSION, unknown files

    def _docker_layer_paths(self) -> set[str] | None:
        try:
            items = json.loads(self.docs["manifest.json"])
            return {clean(p) or "" for item in items for p in item.get("Layers") or []}
        except (ValueError, TypeError, AttributeError):
            return None    # reported properly when the metadata is read at the end

    @staticmethod
    def _read_doc(data: BinaryIO, size: int, path: str) -> bytes:
        if size > DOC_MAX:
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
            chunk = data.read(CHUNK)
        pipe.close()


def _tar_error(e: BaseException) -> str:
    msg = str(e) or type(e).__name__
    if msg in ("empty file", "unexpected end of data", "end of file header"):
        return "unexpected EOF"
    return msg


class DirSource(Source):
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
            if os.path.getsize(f) > DOC_MAX:
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
                media_type = OCI_LAYER_BY_COMPRESSION[detect_compression(fh.read(10))]
            self.layers[path] = self.pool.submit(self._import, path, f, media_type, os.path.getsize(f),
                                                 digest_of_path(path))

    def close(self) -> None:
        self.pool.shutdown(wait=True)

