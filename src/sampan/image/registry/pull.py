"""``docker pull``: the one way an image comes from a registry into the image store.

Each layer streams from the registry straight into ``ImageStore.import_layer``: the blob is
stored, its digest and diff_id verified and its snapshot unpacked in one pass while it
downloads (several layers at once), so a pull is done when the last byte arrives. A
connection lost mid-layer is resumed with a Range request. A lease keeps everything from GC
until the image is recorded. A failed pull records no image; the layers it completed stay,
unreferenced, until the next GC, so that trying again does not fetch them again.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass

from .. import reference as _ref
from ..content import DigestMismatch
from ..pipe import Budget, Pipe, PipeAborted
from ..store import ImageStore, InvalidImage
from .blobs import Progress
from .client import Registry
from .errors import RegistryError

_PIPE_BYTES = 16 << 20      # per layer: what the download may run ahead of the unpacking


@dataclass(frozen=True)
class PullResult:
    image_id: str            # the config digest
    reference: str           # familiar: busybox:latest, or name@digest
    digest: str              # what the reference resolved to (the index when there is one)
    manifest_digest: str     # the image manifest for the platform
    up_to_date: bool         # the tag already pointed at this image
    downloaded: int          # bytes fetched from the registry


class _UnpackingWriter:
    """What ``Registry.fetch_blob`` writes a layer into: the bytes go through a pipe to
    ``import_layer`` on its own thread. ``commit`` waits for it to store and verify."""

    def __init__(self, store: ImageStore, lease: str, digest: str, media_type: str, diff_id: str | None) -> None:
        self.offset = 0          # a new pull starts the layer over (a retry within it resumes)
        self.digest = digest
        self.pipe = Pipe(Budget(_PIPE_BYTES))
        self.error: BaseException | None = None

        def run() -> None:
            try:
                store.import_layer(self.pipe, media_type, expected_digest=digest, expected_diff_id=diff_id,
                                   lease=lease)
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


def pull(store: ImageStore, name: str, *, platform: str | None = None, auth: tuple[str, str] | None = None,
         insecure: list[str] | tuple[str, ...] = (), progress: Progress | None = None,
         config_dir: str | None = None, registry: Registry | None = None) -> PullResult:
    """Resolve ``name`` (``busybox``, ``host:port/repo:tag``, ``repo@digest``) to the manifest
    for ``platform`` (the host's by default), fetch and unpack what the store lacks, record
    the image and point the reference at it.

    ``auth`` is (user, password) (from ``X-Registry-Auth``); without it the credentials of
    docker's config.json in ``config_dir`` are used. ``progress(event, digest, done, total)``
    reports each layer: "exists", "start", "progress", "done" (never two calls at once).
    ``registry`` is a client to use instead of a new one (it must be for the reference's host).
    """
    ref = _ref.parse(name)
    reg = registry or Registry(ref.domain, insecure=insecure, config_dir=config_dir, credentials=auth)
    try:
        return _pull(store, reg, ref, platform, progress)
    finally:
        if registry is None:
            reg.close()


def _pull(store: ImageStore, reg: Registry, ref: _ref.Reference, platform: str | None,
          progress: Progress | None) -> PullResult:
    downloaded_before = reg.stats["downloaded"]
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
        return PullResult(existing[0], ref.familiar(), target.digest, manifest.digest, True, 0)

    layer_digests = [d["digest"] for d in layer_descs]
    with store.lease(blobs=[config_desc["digest"], manifest.digest, *layer_digests,
                            *([index.digest] if index else [])]) as lease:
        reg.fetch_blob(ref.path, config_desc["digest"], store.content, size=config_desc.get("size"))
        config_bytes = store.content.read(config_desc["digest"])
        diff_ids = _diff_ids(config_bytes)
        if len(diff_ids) != len(layer_descs):
            raise InvalidImage(f"image config lists {len(diff_ids)} layers, the manifest {len(layer_descs)}")
        store.meta.add_to_lease(lease, layers=diff_ids)
        _fetch_layers(reg, store, lease, ref.path, layer_descs, diff_ids, progress)
        if index is not None:
            store.content.put(index.data, index.digest)
        image_id = store.add_image(manifest.data, config_bytes,
                                   [(d["digest"], d.get("mediaType", "")) for d in layer_descs],
                                   extra_blobs=[index.digest] if index else [])
    if ref.tag:
        store.tag(image_id, ref)
    store.tag(image_id, ref.with_digest(target.digest))
    shown = ref.familiar() if ref.tag else ref.with_digest(target.digest).familiar()
    return PullResult(image_id, shown, target.digest, manifest.digest, False,
                      reg.stats["downloaded"] - downloaded_before)


def _diff_ids(config_bytes: bytes) -> list[str]:
    try:
        config = json.loads(config_bytes)
        diff_ids = config["rootfs"]["diff_ids"]
    except (ValueError, KeyError, TypeError):
        raise InvalidImage("malformed image config: no rootfs.diff_ids") from None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise InvalidImage("malformed image config: no rootfs.diff_ids")
    return diff_ids


def _have_layer(store: ImageStore, digest: str) -> bool:
    """The blob is stored and its layer unpacked (or verified, in copy mode)."""
    row = store.meta.one("SELECT diff_id FROM layer_blobs WHERE digest = ?", (digest,))
    return row is not None and store.content.has(digest) and store.snapshots.has(row[0])


def _fetch_layers(reg: Registry, store: ImageStore, lease: str, name: str, descs: list[dict],
                  diff_ids: list[str], progress: Progress | None) -> None:
    """Download and unpack the layers the store lacks, ``reg.max_concurrent`` at a time;
    the first failure stops the others."""
    jobs = []
    seen: set[str] = set()
    for desc, diff_id in zip(descs, diff_ids):
        digest = desc["digest"]
        if digest in seen:
            continue
        seen.add(digest)
        if _have_layer(store, digest) or store.content.has(digest):
            # Already here (a blob without its snapshot is unpacked by add_image).
            if progress is not None:
                size = store.content.size(digest)
                progress("exists", digest, size, size)
            continue
        sink = _LayerSink(store, lease, desc.get("mediaType", ""), diff_id)
        jobs.append(lambda p, c, d=desc, s=sink: reg.fetch_blob(name, d["digest"], s, size=d.get("size"),
                                                                progress=p, cancel=c))
    reg.parallel(jobs, progress)
