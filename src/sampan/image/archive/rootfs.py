"""``docker import``: a root filesystem tarball becomes an image of one layer."""
from __future__ import annotations

import os
from typing import BinaryIO

from ...oci.mediatypes import OCI_LAYER_BY_COMPRESSION
from ...timefmt import rfc3339
from .. import changes as _changes
from .. import platform as _platform
from .. import reference as _ref
from ..layers.compression import sniffed
from ..store import ImageStore, InvalidImage
from .layout import Progress, compact, make_manifest


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
            kind, stream = sniffed(opened or src)  # type: ignore[arg-type]
            size = os.fstat(opened.fileno()).st_size if opened else 0
            if progress:
                progress("start", "rootfs", 0, size)
            media_type = OCI_LAYER_BY_COMPRESSION[kind]
            digest, diff_id = store.import_layer(
                stream, media_type, lease=lease,
                on_read=(lambda done: progress("progress", "rootfs", done, size)) if progress else None)
        finally:
            if opened:
                opened.close()
        if progress:
            progress("done", "rootfs", size, size)
        created = rfc3339()
        cfg = {"architecture": plat.architecture, "os": plat.os, "config": config, "created": created,
               "comment": comment, "history": [{"created": created, "comment": comment}],
               "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
        if plat.variant:
            cfg["variant"] = plat.variant
        config_bytes = compact(cfg)
        manifest = make_manifest(config_bytes, [(digest, media_type, store.content.size(digest))])
        image_id = store.add_image(manifest, config_bytes, [(digest, media_type)])
    if ref is not None:
        store.tag(image_id, ref)
    return image_id
