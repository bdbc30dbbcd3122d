"""``load``: every image of a docker-archive or an OCI image layout, read once.

The archive may come from a pipe and may be compressed as a whole (gzip, zstd, xz, bzip2).
What a member is becomes clear only from the metadata, which docker writes last, so the
sources (sources.py) recognise members by name and content while layers unpack in
parallel. At the end the metadata (``manifest.json``, else ``index.json``) says which
layers make which image; the computed digests are checked against the manifests and
configs, and only when every image is complete is anything recorded. A failed load
records nothing and the layers it unpacked are garbage-collected.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import BinaryIO, Callable

from ...oci import mediatypes
from .. import platform as _platform
from .. import reference as _ref
from ..content import digest_of
from ..layers.compression import decompressed
from ..store import ImageStore
from .layout import ANNOTATION_NAME, ArchiveError, Progress, blob_path, clean, make_manifest, parse_json
from .sources import DirSource, Source, TarSource


@dataclass
class LoadedImage:
    id: str
    tags: list[str] = field(default_factory=list)                   # familiar references
    replaced: list[tuple[str, str]] = field(default_factory=list)   # (tag, image it was moved from)


@dataclass
class _Spec:
    config_path: str
    layer_paths: list[str]
    refs: list[_ref.Reference]
    manifest: bytes | None = None         # the image's own manifest when the archive has it


def _docker_specs(src: Source, oci_manifests: dict[str, bytes]) -> list[_Spec]:
    items = parse_json(src.doc("manifest.json", "manifest"), "manifest.json")
    if not isinstance(items, list):
        raise ArchiveError("invalid manifest.json: not a list")
    specs = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("Config"), str) or \
                not isinstance(item.get("Layers"), list):
            raise ArchiveError("invalid manifest.json: an entry lacks Config or Layers")
        config = clean(item["Config"])
        layers = [clean(p) if isinstance(p, str) else None for p in item["Layers"]]
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


def _oci_manifests(src: Source) -> list[tuple[bytes, dict]]:
    """(manifest bytes, index descriptor) of the images index.json names, following
    nested indexes to the host's platform."""
    index = parse_json(src.doc("index.json", "index"), "index.json")
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise ArchiveError("invalid index.json: no manifests")
    out = []
    todo = [(d, 0) for d in index["manifests"]]
    while todo:
        desc, depth = todo.pop(0)
        if not isinstance(desc, dict) or not isinstance(desc.get("digest"), str):
            raise ArchiveError("invalid index.json: a descriptor has no digest")
        try:
            path = blob_path(desc["digest"])
        except ValueError as e:
            raise ArchiveError(f"invalid index.json: {e}") from None
        data = src.doc(path, "manifest")
        if digest_of(data) != desc["digest"] and desc["digest"].startswith("sha256:"):
            raise ArchiveError(f"digest mismatch for {path}: the blob is {digest_of(data)}")
        doc = parse_json(data, f"manifest {desc['digest']}")
        if not isinstance(doc, dict):
            raise ArchiveError(f"invalid manifest {desc['digest']}")
        media_type = doc.get("mediaType") or desc.get("mediaType")
        if media_type in (mediatypes.OCI_INDEX, mediatypes.DOCKER_MANIFEST_LIST) or "manifests" in doc:
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


def _layout_specs(src: Source) -> list[_Spec]:
    specs = []
    for data, desc in _oci_manifests(src):
        doc = json.loads(data)
        try:
            config = blob_path(doc["config"]["digest"])
            layers = [blob_path(layer["digest"]) for layer in doc["layers"]]
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


def _manifests_by_config(src: Source) -> dict[str, bytes]:
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


def _specs(src: Source, has: Callable[[str], bool]) -> list[_Spec]:
    if has("manifest.json"):
        return _docker_specs(src, _manifests_by_config(src) if has("index.json") else {})
    if has("index.json"):
        return _layout_specs(src)
    raise ArchiveError("invalid archive: no manifest.json or index.json (not a docker-archive or OCI layout)")


@dataclass
class _Ready:
    manifest: bytes
    config: bytes
    layers: list[tuple[str, str]]
    refs: list[_ref.Reference]


def _check(src: Source, spec: _Spec) -> _Ready:
    """Everything the image needs is there and matches its manifest and config."""
    config_bytes = src.doc(spec.config_path, "image config")
    config = parse_json(config_bytes, f"image config {spec.config_path}")
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
            dsrc = DirSource(store, lease, progress, src)
            try:
                specs = _specs(dsrc, dsrc.has_doc)
                dsrc.start([dsrc.resolve(p) for s in specs for p in s.layer_paths])
                ready = [_check(dsrc, s) for s in specs]
            finally:
                dsrc.close()
        else:
            tsrc = TarSource(store, lease, progress)
            if isinstance(src, str):
                with open(src, "rb") as f:
                    tsrc.read(decompressed(f))
            else:
                tsrc.read(decompressed(src))
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

