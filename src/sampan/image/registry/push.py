"""``docker push``: the one way blobs and manifests go to a registry.

``push`` uploads an image of the store under a tag; ``push_manifest`` is what it does with the
client: the blobs a manifest needs (an index's manifests and their blobs too), mounted from
other repositories of the registry where it can, then the manifest itself.
"""
from __future__ import annotations

import json
from typing import NamedTuple

from ...oci import mediatypes as mt
from .. import reference as _ref
from ..content import ContentStore, DigestMismatch, digest_of
from ..store import ImageStore
from .blobs import Progress
from .client import Registry, detect_media_type
from .errors import NotFound, RegistryError


class PushResult(NamedTuple):
    digest: str              # the manifest's digest
    size: int                # the manifest's size in bytes


def push(store: ImageStore, name: str, *, auth: tuple[str, str] | None = None,
         insecure: list[str] | tuple[str, ...] = (), progress: Progress | None = None,
         config_dir: str | None = None, registry: Registry | None = None) -> PushResult:
    """Upload the image ``name`` (a tag) and its blobs, and record ``repo@digest`` as a digest
    of the image. Blobs are mounted from the other repositories of the same registry the image
    came from or went to. ``auth``, ``progress`` and ``registry`` as for ``pull``; progress
    events per blob: "exists", "mounted", or "start", "progress", "done"; then "manifest"."""
    ref = _ref.parse(name)
    img = store.resolve(str(ref))
    manifest = store.content.read(img.manifest_digest)
    siblings = [r.path for r in map(_ref.parse, img.refs) if r.domain == ref.domain and r.path != ref.path]
    reg = registry or Registry(ref.domain, insecure=insecure, config_dir=config_dir, credentials=auth)
    try:
        digest = push_manifest(reg, ref, store.content, manifest, img.manifest_media_type, progress=progress,
                               mount_from=sorted(set(siblings)))
    finally:
        if registry is None:
            reg.close()
    store.tag(img.id, ref.with_digest(digest))
    return PushResult(digest, len(manifest))


def push_manifest(reg: Registry, ref: _ref.Reference | str, content: ContentStore, manifest_bytes: bytes,
                  media_type: str, *, progress: Progress | None = None,
                  mount_from: list[str] | dict[str, list[str]] = ()) -> str:
    """Upload the blobs a manifest needs from ``content``, then PUT the manifest under the
    reference's tag (or digest). Returns the manifest's digest.

    ``mount_from`` lists repositories of this registry that may hold the blobs (a list of
    names for every blob, or a {digest: [names]} map); they are mounted instead of uploaded.
    """
    ref = _ref.parse(ref) if isinstance(ref, str) else ref
    name = ref.path
    digest = digest_of(manifest_bytes)
    if ref.digest and ref.digest != digest:
        raise DigestMismatch(f"digest mismatch: manifest is {digest}, reference says {ref.digest}")
    media_type = media_type or detect_media_type(manifest_bytes, None)

    def mounts_for(d: str) -> list[str]:
        repos = (mount_from.get(d) or []) if isinstance(mount_from, dict) else list(mount_from or [])
        out = []
        for repo in repos:
            first = repo.split("/", 1)[0]
            if "/" in repo and first in (reg.host, reg.netloc):
                repo = repo.split("/", 1)[1]
            elif "/" in repo and ("." in first or ":" in first):
                continue    # another registry: cannot mount from there
            out.append(repo)
        return out

    def blobs_of(data: bytes) -> list[tuple[str, int | None]]:
        doc = json.loads(data)
        out = []
        if doc.get("config"):
            out.append((doc["config"]["digest"], doc["config"].get("size")))
        for layer in doc.get("layers") or []:
            if layer.get("mediaType") in mt.NONDISTRIBUTABLE_LAYERS or layer.get("urls"):
                continue
            out.append((layer["digest"], layer.get("size")))
        return out

    def push_blobs(pairs: list[tuple[str, int | None]]) -> None:
        seen, jobs = set(), []
        for d, s in pairs:
            if d in seen:
                continue
            seen.add(d)
            if not content.has(d):
                raise NotFound(f"blob unknown: {d} is not in the local store", code="BLOB_UNKNOWN")
            jobs.append(lambda p, c, d=d, s=s: reg.upload_blob(name, d, content, size=s, mount_from=mounts_for(d),
                                                                 progress=p, cancel=c))
        reg.parallel(jobs, progress)

    if media_type in mt.INDEX_TYPES:
        doc = json.loads(manifest_bytes)
        children = []
        for desc in doc.get("manifests") or []:
            child_digest = desc["digest"]
            if not content.has(child_digest):
                raise NotFound(f"manifest unknown: {child_digest} is not in the local store",
                               code="MANIFEST_UNKNOWN")
            child = content.read(child_digest)
            child_type = desc.get("mediaType") or detect_media_type(child, None)
            if child_type in mt.INDEX_TYPES:
                raise RegistryError("nested indexes are not supported for push")
            children.append((child_digest, child, child_type))
        push_blobs([blob for _, child, _ in children for blob in blobs_of(child)])
        for child_digest, child, child_type in children:
            reg.put_manifest(name, child_digest, child, child_type)
    else:
        push_blobs(blobs_of(manifest_bytes))
    pushed = reg.put_manifest(name, ref.tag or digest, manifest_bytes, media_type)
    if progress:
        progress("manifest", pushed, len(manifest_bytes), len(manifest_bytes))
    return pushed
