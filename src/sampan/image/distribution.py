"""Pull an image from a registry into the image store, ready to run, and push one.

``pull_image`` streams each layer from the registry straight into
``ImageStore.import_layer``: the blob is stored, its digest and diff_id verified and
its snapshot unpacked in one pass while it downloads (several layers at once), so a
pull is done when the last byte arrives. A lease keeps everything from GC until the
image is recorded. A failed pull records no image; the layers it completed stay, unreferenced,
until the next GC, so that trying again does not fetch them again.
"""
from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from . import reference as _ref
from .content import DigestMismatch
from .pipe import Budget, Pipe, PipeAborted
from .registry import Cancelled, Registry, RegistryError
from .store import ImageStore, InvalidImage

# progress(event, digest, done, total): the registry client's events ("exists", "start",
# "resume", "progress", "done", "manifest") for every layer.
Progress = Callable[[str, str, int, int], None]

_PIPE_BYTES = 16 << 20      # per layer: what the download may run ahead of the unpacking


@dataclass
class PullResult:
    image_id: str
    reference: str           # familiar: busybox:latest, or name@digest
    digest: str              # what the reference resolved to (the index when there is one)
    up_to_date: bool         # the tag already pointed at this image


class _UnpackingWriter:
    """What ``Registry.fetch_blob`` writes a layer into: the bytes go through a pipe to
    ``import_layer`` on its own thread. ``commit`` waits for it to store and verify."""

    def __init__(self, store: ImageStore, lease: str, digest: str, media_type: str, diff_id: str | None) -> None:
        self.offset = 0          # never resumes: a retry starts the layer over
        self.digest = digest
        self.pipe = Pipe(Budget(_PIPE_BYTES))
        self.error: BaseException | None = None
        self.result: tuple[str, str] | None = None

        def run() -> None:
            try:
                self.result = store.import_layer(self.pipe, media_type, expected_digest=digest,
                                                 expected_diff_id=diff_id, lease=lease)
            except BaseException as e:  # noqa: BLE001 - handed to the downloading thread
                self.error = e
            finally:
                self.pipe.release()

        self.thread = threading.Thread(target=run, name=f"unpack-{digest[7:19]}", daemon=True)
        self.thread.start()

    def _raise(self) -> None:
        e = self.error
        if isinstance(e, InvalidImage):
            # DigestMismatch lets the registry client tell a bad download from a bad layer.
            cls = DigestMismatch if "digest mismatch" in str(e) else InvalidImage
            raise cls(f"layer {self.digest}: {e}") from None
        if e is not None:
            raise e

    def write(self, chunk: bytes | memoryview) -> int:
        if self.pipe.released:       # the unpacker stopped: it failed, or had the layer
            self.thread.join()
            self._raise()
            return len(chunk)
        self.pipe.write(bytes(chunk))
        return len(chunk)

    def commit(self) -> str:
        self.pipe.close()
        self.thread.join()
        self._raise()
        return self.digest

    def close(self) -> None:
        """The download failed: stop the unpacker (it cleans up after itself)."""
        if self.thread.is_alive():
            self.pipe.abort(PipeAborted(f"download of {self.digest} failed"))
            self.thread.join()


class _LayerSink:
    """The ``store`` argument of ``Registry.fetch_blob`` for one layer."""

    def __init__(self, store: ImageStore, lease: str, media_type: str, diff_id: str | None) -> None:
        self.store, self.lease, self.media_type, self.diff_id = store, lease, media_type, diff_id

    def has(self, digest: str) -> bool:
        return False

    def writer(self, expected: str, size: int | None = None, resume: bool = False) -> _UnpackingWriter:
        return _UnpackingWriter(self.store, self.lease, expected, self.media_type, self.diff_id)


def _have_layer(store: ImageStore, digest: str) -> bool:
    """The blob is stored and its layer unpacked (or verified, in copy mode)."""
    row = store.meta.one("SELECT diff_id FROM layer_blobs WHERE digest = ?", (digest,))
    return row is not None and store.content.has(digest) and store.snapshots.has(row[0])


def pull_image(store: ImageStore, name: str, *, platform: str | None = None, progress: Progress | None = None,
               insecure: list[str] | tuple[str, ...] = (), config_dir: str | None = None) -> PullResult:
    """``docker pull``: resolve ``name`` (``busybox``, ``host:port/repo:tag``, ``repo@digest``)
    to the manifest for ``platform`` (the host's by default), fetch and unpack what the
    store lacks, record the image and point the reference at it."""
    ref = _ref.parse(name)
    plock = threading.Lock()

    def report(event: str, digest: str, done: int, total: int) -> None:
        if progress is not None:
            with plock:
                progress(event, digest, done, total)

    with Registry(ref.domain, insecure=insecure, config_dir=config_dir) as reg:
        manifest, index = reg.resolve(ref.path, ref.digest or ref.tag or "latest", platform)
        target = index or manifest
        doc = manifest.json()
        config_desc, layer_descs = doc.get("config"), doc.get("layers")
        if not isinstance(config_desc, dict) or not isinstance(layer_descs, list) or \
                not all(isinstance(d, dict) and isinstance(d.get("digest"), str) for d in layer_descs):
            raise RegistryError(f"invalid manifest {manifest.digest}: missing config or layers")
        before = store.meta.tag_target(str(ref))
        existing = store.meta.one("SELECT id FROM images WHERE manifest_digest = ?", (manifest.digest,))
        if existing is not None and before == existing[0]:
            return PullResult(existing[0], ref.familiar(), target.digest, True)

        layer_digests = [d["digest"] for d in layer_descs]
        with store.lease(blobs=[config_desc["digest"], manifest.digest, *layer_digests,
                                *([index.digest] if index else [])]) as lease:
            reg.fetch_blob(ref.path, config_desc["digest"], store.content, size=config_desc.get("size"))
            config_bytes = store.content.read(config_desc["digest"])
            diff_ids = _diff_ids(config_bytes)
            if len(diff_ids) != len(layer_descs):
                raise InvalidImage(f"image config lists {len(diff_ids)} layers, the manifest {len(layer_descs)}")
            store.meta.add_to_lease(lease, layers=diff_ids)
            _fetch_layers(reg, store, lease, ref.path, layer_descs, diff_ids, report)
            if index is not None:
                store.content.put(index.data, index.digest)
            image_id = store.add_image(manifest.data, config_bytes,
                                       [(d["digest"], d.get("mediaType", "")) for d in layer_descs],
                                       extra_blobs=[index.digest] if index else [])
    if ref.tag:
        store.tag(image_id, ref)
    store.tag(image_id, ref.with_digest(target.digest))
    shown = ref.familiar() if ref.tag else ref.with_digest(target.digest).familiar()
    return PullResult(image_id, shown, target.digest, False)


def _diff_ids(config_bytes: bytes) -> list[str]:
    try:
        config = json.loads(config_bytes)
        diff_ids = config["rootfs"]["diff_ids"]
    except (ValueError, KeyError, TypeError):
        raise InvalidImage("malformed image config: no rootfs.diff_ids") from None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise InvalidImage("malformed image config: no rootfs.diff_ids")
    return diff_ids


def _fetch_layers(reg: Registry, store: ImageStore, lease: str, name: str, descs: list[dict],
                  diff_ids: list[str], report: Progress) -> None:
    """Download and unpack the layers the store lacks, ``reg.max_concurrent`` at a time;
    the first failure stops the others."""
    cancel = threading.Event()
    jobs: dict[str, tuple[dict, str]] = {}
    for desc, diff_id in zip(descs, diff_ids):
        digest = desc["digest"]
        if digest in jobs:
            continue
        if _have_layer(store, digest) or store.content.has(digest):
            # Already here (a blob without its snapshot is unpacked by add_image).
            size = store.content.size(digest)
            report("exists", digest, size, size)
            continue
        jobs[digest] = (desc, diff_id)

    def one(desc: dict, diff_id: str) -> None:
        sink = _LayerSink(store, lease, desc.get("mediaType", ""), diff_id)
        try:
            reg.fetch_blob(name, desc["digest"], sink, size=desc.get("size"), progress=report, cancel=cancel)
        except BaseException:
            cancel.set()
            raise

    if not jobs:
        return
    with ThreadPoolExecutor(max_workers=min(reg.max_concurrent, len(jobs)), thread_name_prefix="pull") as pool:
        futures = [pool.submit(one, desc, diff_id) for desc, diff_id in jobs.values()]
        try:
            errors = [f.exception() for f in futures]
        except BaseException:
            cancel.set()
            raise
    failed = [e for e in errors if e is not None]
    if failed:
        # The first real failure, not the cancellations it caused in the other transfers.
        raise next((e for e in failed if not isinstance(e, (Cancelled, PipeAborted))), failed[0])


def push_image(store: ImageStore, name: str, *, progress: Progress | None = None,
               insecure: list[str] | tuple[str, ...] = (), config_dir: str | None = None) -> tuple[str, int]:
    """``docker push``: upload the image ``name`` (a tag) and its blobs; returns (manifest
    digest, manifest size) and records ``repo@digest`` as a digest of the image."""
    ref = _ref.parse(name)
    img = store.resolve(str(ref))
    manifest = store.content.read(img.manifest_digest)
    with Registry(ref.domain, insecure=insecure, config_dir=config_dir) as reg:
        digest = reg.push(ref, store.content, manifest, img.manifest_media_type, progress=progress)
    store.tag(img.id, ref.with_digest(digest))
    return digest, len(manifest)
