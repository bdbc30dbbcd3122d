"""The builds behind ``POST /build`` and ``/build/prune``: the builder on the engine's image
store, its RUN steps as the engine's containers, base images pulled as ``docker pull``
does (their progress in the build's stream), the context extracted under the engine root
for the build's length, and the build cache's rows as /system/df shows them."""
from __future__ import annotations

import os
import secrets
from typing import TYPE_CHECKING, BinaryIO

from .. import errors
from ..build.builder import Builder, BuildOptions
from ..build.cache import BuildCache
from ..build.context import BuildContext
from ..build.remote import fetch as remote_context
from ..engine.buildsteps import EngineStepRunner
from ..image import reference
from ..image.store import ImageNotFound
from ..runtime.fsutil import remove_tree
from ..timefmt import rfc3339
from .backend import Credentials, Emit
from .image_service import ImageService

if TYPE_CHECKING:
    from ..engine.containers import Engine


class BuildService:
    def __init__(self, engine: Engine, images: ImageService) -> None:
        self.engine, self.images = engine, images
        self.cache = BuildCache(engine.root)
        self.runner = EngineStepRunner(engine)
        self.runner.sweep()
        self.contexts_dir = os.path.join(engine.root, "build-contexts")
        if os.path.isdir(self.contexts_dir):   # (what a killed daemon's builds left)
            remove_tree(self.contexts_dir)
        os.makedirs(self.contexts_dir, mode=0o700)
        Builder(engine.images, self.runner, self.cache).sweep()

    def close(self) -> None:
        self.cache.close()

    def _resolve_image(self, name: str, emit: Emit, auths: dict[str, Credentials]) -> str:
        """FROM and COPY --from: the local image, else pulled with the build's progress (and
        the credentials X-Registry-Config gave for its registry)."""
        try:
            return self.engine.images.resolve(name).id
        except ImageNotFound:
            pass
        self.images.pull(name, None, auths.get(reference.parse(name).domain), emit)
        return self.engine.images.resolve(name).id

    def build(self, body: BinaryIO, options: BuildOptions, emit: Emit, remote: str | None = None,
              auths: dict[str, Credentials] | None = None) -> str:
        """Build from the context tar in ``body`` (or the ``remote`` one), extracted under the
        engine root for the build's length; ``auths`` are registry -> credentials."""
        workdir = os.path.join(self.contexts_dir, secrets.token_hex(16))
        builder = Builder(self.engine.images, self.runner, self.cache,
                          lambda name, to: self._resolve_image(name, to, auths or {}))
        try:
            context = remote_context(remote, workdir) if remote else BuildContext.from_tar(body, workdir)
            image_id = builder.build(context, options, emit)
        finally:
            if os.path.lexists(workdir):
                remove_tree(workdir)
        for tag in options.tags:
            self.images.emit_event("image", "tag", image_id, {"name": tag})
        return image_id

    def prune(self, until: float | None = None) -> dict:
        keys, freed = self.cache.prune(self.engine.images, until)
        return {"CachesDeleted": [record_id(k) for k in keys] or None, "SpaceReclaimed": freed}

    def usage(self) -> list[dict]:
        """/system/df's BuildCache: one record a cached step, in BuildKit's shape."""
        out = []
        store = self.engine.images
        rows = self.cache.entries()
        record_of = {row["image_id"]: record_id(row["key"]) for row in rows}
        for row in rows:
            if store.meta.image(row["image_id"]) is None:
                continue
            img = store.get(row["image_id"])
            history = img.config.get("history") or []
            own_layer = bool(history) and not history[-1].get("empty_layer") and bool(img.layers)
            parent = record_of.get(row["parent"])
            out.append({"ID": record_id(row["key"]), "Parents": [parent] if parent else None,
                        "Type": "regular", "Description": row["created_by"], "InUse": False,
                        "Shared": bool(img.refs or store.meta.children(img.id)),
                        "Size": img.layers[-1].size if own_layer else 0,
                        "CreatedAt": rfc3339(row["created"]), "LastUsedAt": rfc3339(row["last_used"]),
                        "UsageCount": row["uses"]})
        return out


def record_id(key: str) -> str:
    """A cache entry's ID as /system/df and /build/prune show it (BuildKit's are 25 characters)."""
    return key[:25]


def check_version(version: str | None) -> None:
    """``version=2`` asks for BuildKit, which sampand does not speak (/_ping says Builder-Version 1)."""
    if version not in (None, "", "1"):
        raise errors.Invalid(f"builder version {version!r} is not supported: sampand has the legacy builder "
                             "only (DOCKER_BUILDKIT=0)")
