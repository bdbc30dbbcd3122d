"""The image store the CLI and the engine use: add, tag, resolve, list, inspect, remove.

``ImageStore(root)`` ties together the content store (``<root>/blobs``), the metadata in
``<root>/state.db``, the layer snapshots and GC. Image IDs are config digests, so the
same image has the same ID here and in Docker; removal follows ``docker rmi``.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from .. import errors
from ..oci import mediatypes
from ..timefmt import ZERO_TIME, parse_rfc3339, rfc3339
from . import gc as _gc
from . import reference as _ref
from .content import BlobNotFound, ContentStore, digest_of
from .layers import LayerError
from .metadata import Metadata
from .snapshots import MountSpec, SnapshotError, Snapshotter

_HEX_PREFIX = re.compile(r"^[a-f0-9]{1,64}$")
_FULL_ID = re.compile(r"^sha256:[a-f0-9]{64}$")


class ImageError(errors.Error):
    """Base of the store's errors; each carries its kind (sampan.errors)."""

    @property
    def status(self) -> int:
        """The HTTP status of the kind (engine/containers/create.py still reads it)."""
        return errors.http_status(self)


class InvalidImage(ImageError, errors.Invalid):
    pass


class MissingBlob(ImageError, errors.Invalid):
    pass


class ImageNotFound(ImageError, errors.NotFound):
    pass


class AmbiguousImage(ImageError, errors.Invalid):
    pass


class Conflict(ImageError, errors.Conflict):
    pass


@dataclass
class LayerRef:
    diff_id: str
    digest: str
    media_type: str
    blob_size: int
    size: int               # unpacked bytes


@dataclass
class Image:
    id: str
    manifest_digest: str
    manifest_media_type: str
    config: dict
    created: str
    size: int
    added: float
    parent: str = ""
    last_tag_time: float | None = None
    layers: list[LayerRef] = field(default_factory=list)
    refs: list[str] = field(default_factory=list)      # full references, tags and digests

    @property
    def short_id(self) -> str:
        return self.id.split(":", 1)[-1][:12]

    @property
    def diff_ids(self) -> list[str]:
        return [layer.diff_id for layer in self.layers]

    @property
    def repo_tags(self) -> list[str]:
        """Familiar tag references (``busybox:latest``), as docker shows them."""
        return [_ref.parse(r).familiar() for r in self.refs if "@" not in r]

    @property
    def repo_digests(self) -> list[str]:
        return [_ref.parse(r, default_tag=False).familiar() for r in self.refs if "@" in r]

    @property
    def dangling(self) -> bool:
        return not any("@" not in r for r in self.refs)


class ImageStore:
    def __init__(self, root: str, snapshotter: str | None = None, workers: int | None = None,
                 in_use: Callable[[str], list[tuple[str, bool]]] | None = None) -> None:
        self.root = os.path.abspath(root)
        self.content = ContentStore(self.root)
        self.meta = Metadata(self.root)
        self.snapshots = Snapshotter(self.root, self.content, self.meta, snapshotter)
        self.workers = workers or max(2, min(4, os.cpu_count() or 2))
        # in_use(image_id) -> [(container id, running)] for containers made from the image.
        self.in_use = in_use or (lambda image_id: [])
        self._lock = threading.RLock()

    def close(self) -> None:
        self.meta.close()

    # ------------------------------------------------------------------ leases
    @contextmanager
    def lease(self, blobs: Iterable[str] = (), layers: Iterable[str] = (),
              expires_in: float | None = 3600.0) -> Iterator[str]:
        """Keep blobs/layers safe from GC while the block runs (e.g. during a pull);
        add more with ``store.meta.add_to_lease(name, blobs=[…])``."""
        name = self.meta.create_lease(None, expires_in, blobs, layers)
        try:
            yield name
        finally:
            self.meta.delete_lease(name)

    # ------------------------------------------------------------------ adding
    def add_image(self, manifest_bytes: bytes, config_bytes: bytes, layers: list[tuple[str, str]], *,
                  extra_blobs: Iterable[str] = (), parent: str = "",
                  progress: Callable[[str, int, int], None] | None = None) -> str:
        """Record an image whose layer blobs are in the content store; returns its ID.

        ``layers`` are (blob digest, media type), bottom first, as in the manifest.
        Verifies every blob, unpacks the layers not yet unpacked (in parallel, checking
        each diff_id against the config) and records everything in one transaction.
        ``extra_blobs`` (an index, say) are kept as long as the image. ``progress`` gets
        (blob digest, bytes read, blob size) while layers unpack. On any error nothing of
        the image is recorded and the layers this call unpacked are removed again.
        """
        try:
            config = json.loads(config_bytes)
        except (ValueError, UnicodeDecodeError) as e:
            raise InvalidImage(f"malformed image config: {e}") from None
        if not isinstance(config, dict):
            raise InvalidImage("malformed image config: not a JSON object")
        try:
            manifest = json.loads(manifest_bytes)
        except (ValueError, UnicodeDecodeError) as e:
            raise InvalidImage(f"malformed image manifest: {e}") from None
        if not isinstance(manifest, dict):
            raise InvalidImage("malformed image manifest: not a JSON object")
        image_id = digest_of(config_bytes)
        manifest_digest = digest_of(manifest_bytes)
        mcfg = manifest.get("config")
        if isinstance(mcfg, dict) and mcfg.get("digest") and mcfg["digest"] != image_id:
            raise InvalidImage(f"manifest names config {mcfg['digest']} but the config is {image_id}")
        mlayers = manifest.get("layers")
        if isinstance(mlayers, list) and mlayers:
            named = [m.get("digest") if isinstance(m, dict) else None for m in mlayers]
            if named != [d for d, _ in layers]:
                raise InvalidImage("manifest layers do not match the layers given")
        media_type = manifest.get("mediaType") or mediatypes.OCI_MANIFEST
        rootfs = config.get("rootfs")
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
            raise InvalidImage("malformed image config: no rootfs.diff_ids")
        if len(diff_ids) != len(layers):
            raise InvalidImage(f"image has {len(layers)} layers but its config lists {len(diff_ids)} diff_ids")
        for d in diff_ids:
            if not _FULL_ID.match(d):
                raise InvalidImage(f"malformed image config: invalid diff_id {d!r}")
        for digest, _mt in layers:
            if not self.content.has(digest):
                raise MissingBlob(f"missing blob {digest}")
        extra = list(extra_blobs)
        for d in extra:
            if not self.content.has(d):
                raise MissingBlob(f"missing blob {d}")

        blobs = [image_id, manifest_digest, *(d for d, _ in layers), *extra]
        lease = self.meta.create_lease(None, 3600.0, blobs, diff_ids)
        made: list[str] = []
        try:
            self.content.put(manifest_bytes, manifest_digest)
            self.content.put(config_bytes, image_id)
            self._unpack_all(list(zip(diff_ids, layers)), progress, made)
            self._record(image_id, manifest_digest, media_type, config_bytes, config, diff_ids, layers,
                         extra, parent)
        except BaseException:
            self.meta.delete_lease(lease)
            self._drop_layers(set(made))
            raise
        self.meta.delete_lease(lease)
        return image_id

    def import_layer(self, src: object, media_type: str = mediatypes.OCI_LAYER, *,
                     expected_digest: str | None = None, expected_diff_id: str | None = None,
                     lease: str | None = None, on_read: Callable[[int], None] | None = None) -> tuple[str, str]:
        """Store a layer blob and unpack it in ONE pass over ``src`` (a stream or a path):
        what ``load`` uses, several at once in threads. Returns (blob digest, diff_id).

        Both digests are verified when given. ``lease`` (from ``meta.create_lease``) gets
        the blob and the layer before they are committed, so GC cannot take them before
        ``add_image`` records the image. When the blob and its unpacked layer are already
        here (``expected_digest`` known), ``src`` is not read at all.
        """
        if expected_digest and self.content.has(expected_digest):
            row = self.meta.one("SELECT diff_id FROM layer_blobs WHERE digest = ?", (expected_digest,))
            if row is not None and self.snapshots.has(row[0]) and \
                    (expected_diff_id is None or row[0] == expected_diff_id):
                if lease:
                    self.meta.add_to_lease(lease, blobs=[expected_digest], layers=[row[0]])
                return expected_digest, row[0]
        writer = self.content.writer(expected_digest)
        try:
            def before_commit(res: object) -> None:
                if lease:
                    self.meta.add_to_lease(lease, blobs=[res.digest], layers=[res.diff_id])  # type: ignore[attr-defined]
                writer.commit()

            try:
                res = self.snapshots.unpack_stream(src, media_type, expected_digest=expected_digest,
                                                   expected_diff_id=expected_diff_id, tee=writer,
                                                   on_read=on_read, before_commit=before_commit)
            except (LayerError, SnapshotError) as e:
                raise InvalidImage(str(e)) from None
        finally:
            writer.abort()  # no-op once committed
        return res.digest, res.diff_id

    def _unpack_all(self, todo: list[tuple[str, tuple[str, str]]],
                    progress: Callable[[str, int, int], None] | None, made: list[str]) -> None:
        """Unpack missing layers in parallel; appends the diff_ids this call made to ``made``."""
        jobs: dict[str, tuple[str, str]] = {}
        for diff_id, (digest, mt) in todo:
            if diff_id not in jobs and not self.snapshots.has(diff_id):
                jobs[diff_id] = (digest, mt)
            elif diff_id not in jobs:
                self.snapshots._record_blob(diff_id, digest, mt)
        if not jobs:
            return
        errors: list[BaseException] = []
        lock = threading.Lock()

        def one(diff_id: str, digest: str, mt: str) -> None:
            with lock:
                if errors:
                    return
            cb = None
            if progress is not None:
                total = self.content.size(digest)
                cb = lambda done, d=digest, t=total: progress(d, done, t)  # noqa: E731
            try:
                res = self.snapshots.unpack(diff_id, digest, mt, on_read=cb)
            except BaseException as e:  # noqa: BLE001 - reported below, first one wins
                with lock:
                    errors.append(e)
                return
            if res is not None:
                with lock:
                    made.append(diff_id)

        n = min(self.workers, len(jobs))
        if n == 1:
            for diff_id, (digest, mt) in jobs.items():
                one(diff_id, digest, mt)
        else:
            with ThreadPoolExecutor(max_workers=n, thread_name_prefix="unpack") as pool:
                for diff_id, (digest, mt) in jobs.items():
                    pool.submit(one, diff_id, digest, mt)
        if errors:
            e = errors[0]
            if isinstance(e, (LayerError, SnapshotError)):
                raise InvalidImage(str(e)) from None
            if isinstance(e, BlobNotFound):
                raise MissingBlob(str(e)) from None
            raise e

    def _drop_layers(self, diff_ids: set[str]) -> None:
        if diff_ids:
            _gc.collect(self.content, self.meta, self.snapshots, only_layers=diff_ids, blobs=False)

    def _record(self, image_id: str, manifest_digest: str, media_type: str, config_bytes: bytes, config: dict,
                diff_ids: list[str], layers: list[tuple[str, str]], extra: list[str], parent: str) -> None:
        with self.meta.tx() as c:
            rows = []
            size = 0
            for diff_id, (digest, mt) in zip(diff_ids, layers):
                lrow = c.execute("SELECT unpacked_size, state FROM layers WHERE diff_id = ?", (diff_id,)).fetchone()
                if lrow is None:
                    raise InvalidImage(f"layer {diff_id} vanished while the image was added")
                rows.append((diff_id, digest, mt, self.content.size(digest)))
                size += lrow["unpacked_size"]
                if not os.path.exists(self.content.path(digest)):
                    raise MissingBlob(f"missing blob {digest}")
            created = config.get("created") or ""
            self.meta.put_image(c, image_id, manifest_digest, media_type, config_bytes.decode("utf-8"),
                                created if isinstance(created, str) else "", size, parent)
            c.execute("DELETE FROM image_layers WHERE image_id = ?", (image_id,))
            self.meta.put_image_layers(c, image_id, rows)
            self.meta.put_image_blobs(c, image_id, [image_id, manifest_digest, *extra,
                                                    *(d for d, _ in layers)])

    # ------------------------------------------------------------------ tags
    def tag(self, image_id: str, ref: str | _ref.Reference) -> str:
        """Point ``ref`` at the image (moving it from any other); returns the full ref."""
        r = ref if isinstance(ref, _ref.Reference) else _ref.parse(ref)
        with self.meta.tx() as c:
            if c.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone() is None:
                raise ImageNotFound(f"No such image: {image_id}")
            self.meta.set_tag(c, str(r), r.repository, r.tag, r.digest, image_id)
        return str(r)

    def untag(self, ref: str | _ref.Reference) -> str:
        """Remove the reference; returns the image it pointed at."""
        r = ref if isinstance(ref, _ref.Reference) else _ref.parse(ref)
        with self.meta.tx() as c:
            got = self.meta.delete_tag(c, str(r))
        if got is None:
            raise ImageNotFound(f"No such image: {r.familiar()}")
        return got

    # ------------------------------------------------------------------ lookups
    def get(self, image_id: str) -> Image:
        row = self.meta.image(image_id)
        if row is None:
            raise ImageNotFound(f"No such image: {image_id}")
        return self._image(row)

    def _image(self, row: sqlite3.Row) -> Image:
        layers = []
        for lr in self.meta.image_layers(row["id"]):
            lay = self.meta.layer(lr["diff_id"])
            layers.append(LayerRef(lr["diff_id"], lr["blob_digest"], lr["media_type"], lr["blob_size"],
                                   lay["unpacked_size"] if lay is not None else 0))
        refs = [r["ref"] for r in self.meta.refs_of(row["id"])]
        try:
            config = json.loads(row["config"])
        except ValueError:
            config = {}
        return Image(row["id"], row["manifest_digest"], row["manifest_media_type"], config, row["created"],
                     row["size"], row["added"], row["parent"], row["last_tag_time"], layers, refs)

    def resolve(self, ref_or_id: str) -> Image:
        """By full ID, by name (``busybox``, ``busybox:1``, ``name@sha256:…``, full refs) or
        by a unique ID prefix (with or without ``sha256:``), in docker's order."""
        s = (ref_or_id or "").strip()
        if not s:
            raise ImageNotFound("No such image: ")
        if _FULL_ID.match(s):
            return self.get(s)
        shown = s
        try:
            r = _ref.parse(s)
        except ValueError:
            r = None
        if r is not None:
            shown = r.familiar()
            target = self.meta.tag_target(str(r))
            if target is not None:
                return self.get(target)
            if r.digest:
                # name@digest where the digest is a manifest (or index) we hold for this repo
                for row in self.meta.query(
                        "SELECT DISTINCT i.id FROM images i LEFT JOIN image_blobs b ON b.image_id = i.id "
                        "WHERE i.manifest_digest = ? OR b.digest = ?", (r.digest, r.digest)):
                    refs = self.meta.refs_of(row[0])
                    if any(x["repository"] == r.repository for x in refs):
                        return self.get(row[0])
        prefix = s[7:] if s.startswith("sha256:") else s
        if _HEX_PREFIX.match(prefix):
            ids = self.meta.image_ids_with_prefix(prefix)
            if len(ids) == 1:
                return self.get(ids[0])
            if len(ids) > 1:
                raise AmbiguousImage(f"multiple IDs found with provided prefix: {prefix}")
        raise ImageNotFound(f"No such image: {shown}")

    def exists(self, ref_or_id: str) -> bool:
        try:
            self.resolve(ref_or_id)
            return True
        except ImageError:
            return False

    def list(self) -> list[Image]:
        return [self._image(r) for r in self.meta.images()]

    def inspect(self, ref_or_id: str) -> dict:
        """docker's ImageInspect shape."""
        img = self.resolve(ref_or_id)
        cfg = img.config
        out = {
            "Id": img.id,
            "RepoTags": img.repo_tags,
            "RepoDigests": img.repo_digests,
            "Parent": img.parent,
            "Comment": cfg.get("comment", ""),
            "Created": cfg.get("created", ""),
            "DockerVersion": cfg.get("docker_version", ""),
            "Author": cfg.get("author", ""),
            "Config": cfg.get("config") or {},
            "Architecture": cfg.get("architecture", ""),
            "Os": cfg.get("os", ""),
            "Size": img.size,
            "GraphDriver": {"Name": "overlay2" if self.snapshots.kind == "overlay" else "vfs", "Data": None},
            "RootFS": {"Type": "layers", "Layers": img.diff_ids},
            "Metadata": {"LastTagTime": rfc3339(img.last_tag_time) if img.last_tag_time else ZERO_TIME},
            "Descriptor": {"mediaType": img.manifest_media_type, "digest": img.manifest_digest,
                           "size": self.content.size(img.manifest_digest)
                           if self.content.has(img.manifest_digest) else 0},
        }
        if cfg.get("variant"):
            out["Variant"] = cfg["variant"]
        if cfg.get("os.version"):
            out["OsVersion"] = cfg["os.version"]
        if self.snapshots.kind == "overlay":
            try:
                lowers = self.snapshots.lowers(img.diff_ids)
                out["GraphDriver"]["Data"] = {"LowerDir": ":".join(lowers)}
            except SnapshotError:
                pass
        return out

    def history(self, ref_or_id: str) -> list[dict]:
        """docker's ImageHistory: newest first; Id only on the top entry."""
        img = self.resolve(ref_or_id)
        hist = img.config.get("history") or []
        sizes = [lay.size for lay in img.layers]
        entries = []
        li = 0
        if not hist:
            hist = [{"created": img.created, "created_by": ""} for _ in img.layers]
        for h in hist:
            empty = bool(h.get("empty_layer"))
            size = 0
            if not empty and li < len(sizes):
                size = sizes[li]
                li += 1
            entries.append({"Id": "<missing>", "Created": int(parse_rfc3339(h.get("created", ""))),
                            "CreatedBy": h.get("created_by", ""), "Tags": None, "Size": size,
                            "Comment": h.get("comment", "")})
        entries.reverse()
        if entries:
            entries[0]["Id"] = img.id
            entries[0]["Tags"] = img.repo_tags or None
        return entries

    # ------------------------------------------------------------------ removal
    def _conflict(self, img: Image, hard_only: bool) -> str | None:
        if self.meta.children(img.id):
            return f"conflict: unable to delete {img.short_id} (cannot be forced) - image has dependent child images"
        users = self.in_use(img.id)
        for cid, running in users:
            if running:
                return (f"conflict: unable to delete {img.short_id} (cannot be forced) - image is being used "
                        f"by running container {cid[:12]}")
        if not hard_only:
            for cid, running in users:
                if not running:
                    return (f"conflict: unable to delete {img.short_id} (must be forced) - image is being used "
                            f"by stopped container {cid[:12]}")
        return None

    def remove(self, ref_or_id: str, force: bool = False, prune: bool = True) -> list[dict]:
        """``docker rmi``: returns records like [{"Untagged": "busybox:latest"}, {"Deleted": id}].

        By name: untag; the image goes when its last reference went and no container
        uses it (a stopped container keeps it quietly; force removes it anyway). By ID:
        all its references go (refused when they span repositories unless force), the
        image goes unless a container uses it (stopped: must force; running: never).
        Raises Conflict (409) or ImageNotFound (404).
        """
        with self._lock:
            img = self.resolve(ref_or_id)
            records: list[dict] = []
            refs = [_ref.parse(r, default_tag=False) for r in img.refs]
            by_id = self._is_id_prefix(img.id, ref_or_id)
            quiet = False
            if not by_id:
                parsed = _ref.parse(ref_or_id)
                if not force and self._single_reference(refs):
                    users = self.in_use(img.id)
                    if users:
                        raise Conflict(f"conflict: unable to remove repository reference {ref_or_id!r} "
                                       f"(must force) - container {users[0][0][:12]} is using its referenced "
                                       f"image {img.short_id}")
                with self.meta.tx() as c:
                    self.meta.delete_tag(c, str(parsed))  # absent is fine (found by manifest digest)
                records.append({"Untagged": parsed.familiar()})
                remaining = [r for r in refs if str(r) != str(parsed)]
                if parsed.digest is None and not any(
                        r.digest is None and r.repository == parsed.repository for r in remaining):
                    keep = []
                    with self.meta.tx() as c:
                        for r in remaining:
                            if r.digest is not None and r.repository == parsed.repository:
                                self.meta.delete_tag(c, str(r))
                                records.append({"Untagged": r.familiar()})
                            else:
                                keep.append(r)
                    remaining = keep
                if remaining:
                    return records
                refs = []
                quiet = True
            else:
                if self._single_reference(refs):
                    conflict = self._conflict(img, hard_only=force)
                    if conflict:
                        raise Conflict(conflict)
                    with self.meta.tx() as c:
                        for r in refs:
                            self.meta.delete_tag(c, str(r))
                            records.append({"Untagged": r.familiar()})
                    refs = []
            self._delete(img, records, force, quiet, refs)
            return records

    def _delete(self, img: Image, records: list[dict], force: bool, quiet: bool, refs: list[_ref.Reference]) -> None:
        conflict = self._conflict(img, hard_only=force)
        if conflict is None and refs and not force:
            conflict = (f"conflict: unable to delete {img.short_id} (must be forced) - image is referenced in "
                        "multiple repositories")
        if conflict:
            if quiet:
                return
            raise Conflict(conflict)
        with self.meta.tx() as c:
            for r in self.meta.refs_of(img.id):
                records.append({"Untagged": _ref.parse(r["ref"], default_tag=False).familiar()})
            self.meta.delete_image(c, img.id)
        records.append({"Deleted": img.id})
        self.gc()

    @staticmethod
    def _is_id_prefix(image_id: str, s: str) -> bool:
        hexid = image_id.split(":", 1)[1]
        return image_id.startswith(s) or hexid.startswith(s)

    @staticmethod
    def _single_reference(refs: list[_ref.Reference]) -> bool:
        """All references in one repository with at most one tag (docker's isSingleReference)."""
        if len(refs) <= 1:
            return len(refs) == 1
        single = None
        canonical: set[str] = set()
        for r in refs:
            if r.digest is not None:
                canonical.add(r.repository)
            elif single is None:
                single = r
            else:
                return False
        if single is None:
            single = refs[0]
        return len(canonical) == 1 and single.repository in canonical

    def prune(self, dangling_only: bool = True) -> dict:
        """``docker image prune [-a]``: {"ImagesDeleted": [...], "SpaceReclaimed": bytes}."""
        deleted: list[dict] = []
        with self._lock:
            # Children first, so a parent chain goes in one call.
            changed = True
            while changed:
                changed = False
                for img in self.list():
                    if dangling_only and not img.dangling:
                        continue
                    if self.in_use(img.id) or self.meta.children(img.id):
                        continue
                    with self.meta.tx() as c:
                        for r in self.meta.refs_of(img.id):
                            deleted.append({"Untagged": _ref.parse(r["ref"], default_tag=False).familiar()})
                        self.meta.delete_image(c, img.id)
                    deleted.append({"Deleted": img.id})
                    changed = True
            res = self.gc()
        return {"ImagesDeleted": deleted or None, "SpaceReclaimed": res.bytes_freed}

    # ------------------------------------------------------------------ rootfs and GC
    def prepare_rootfs(self, container_key: str, ref_or_id: str) -> MountSpec:
        """Make and mount a container's rootfs from an image (see Snapshotter.prepare)."""
        img = self.resolve(ref_or_id)
        return self.snapshots.prepare(container_key, img.diff_ids, img.id)

    def gc(self, ingest_age: float = 3600.0) -> _gc.GCResult:
        return _gc.collect(self.content, self.meta, self.snapshots, ingest_age=ingest_age)

    def disk_usage(self) -> dict:
        """Bytes used by blobs and by unpacked layers (for ``system df``)."""
        blobs = 0
        for d in self.content.digests():
            try:
                blobs += self.content.size(d)
            except BlobNotFound:
                pass
        layers = sum(r["unpacked_size"] for r in self.meta.layers())
        return {"blobs": blobs, "layers": layers}
