"""New images from a parent and one change: the config, history and layer as Docker's legacy
builder (and ``docker commit``) write them.

``write_layer`` turns an overlay upper dir into a layer blob (None when it changes nothing:
Docker's empty layer); ``new_image`` records the child of a parent (or of scratch) with the
given config and history entry. The config's keys come in Docker's order (it marshals the
image through a map: sorted; the container config in its Go struct's field order), so the
same build gives the same bytes, hence the same image ID, on every run with equal times.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from .. import __version__
from ..oci import mediatypes
from ..timefmt import rfc3339_ns
from . import platform as _platform
from .archive.layout import make_manifest
from .layers import diff as _diff
from .store import ImageStore

# The diff_id of a tar with no entries (two zero blocks): Docker's layer.EmptyLayer.
EMPTY_LAYER = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"

# container.Config's fields in Go's order; the omitempty ones are left out when empty.
_CONFIG_FIELDS = ("Hostname", "Domainname", "User", "AttachStdin", "AttachStdout", "AttachStderr",
                  "ExposedPorts", "Tty", "OpenStdin", "StdinOnce", "Env", "Cmd", "Healthcheck", "ArgsEscaped",
                  "Image", "Volumes", "WorkingDir", "Entrypoint", "NetworkDisabled", "MacAddress", "OnBuild",
                  "Labels", "StopSignal", "StopTimeout", "Shell")
_OMIT_EMPTY = frozenset({"ExposedPorts", "Healthcheck", "ArgsEscaped", "NetworkDisabled", "MacAddress",
                         "StopSignal", "StopTimeout", "Shell"})
_DEFAULTS: dict[str, object] = {"Hostname": "", "Domainname": "", "User": "", "AttachStdin": False,
                                "AttachStdout": False, "AttachStderr": False, "Tty": False, "OpenStdin": False,
                                "StdinOnce": False, "Env": None, "Cmd": None, "Image": "", "Volumes": None,
                                "WorkingDir": "", "Entrypoint": None, "OnBuild": None, "Labels": None}
_HEALTH_FIELDS = ("Test", "Interval", "Timeout", "StartPeriod", "StartInterval", "Retries")


def container_config(config: dict) -> dict:
    """``config`` (an image's or a step's run config) in container.Config's shape and order."""
    out: dict = {}
    for name in _CONFIG_FIELDS:
        value = config.get(name, _DEFAULTS.get(name))
        if name in _OMIT_EMPTY and not value:
            continue
        if name in ("ExposedPorts", "Volumes", "Labels") and value:
            value = {k: value[k] for k in sorted(value)}
        if name == "Healthcheck":
            value = {k: value[k] for k in _HEALTH_FIELDS if value.get(k)}
        out[name] = value
    return out


@dataclass(frozen=True)
class Layer:
    """A layer blob in the content store (uncompressed, as Docker keeps built layers)."""
    digest: str
    diff_id: str
    size: int
    media_type: str = mediatypes.OCI_LAYER


def write_layer(store: ImageStore, upper: str, lowers: list[str], lease: str) -> Layer | None:
    """The changes in an overlay upper dir (over ``lowers``, top first) as a layer blob, kept
    under ``lease`` until an image holds it; None when nothing changed (an empty layer)."""
    writer = store.content.writer()
    try:
        res = _diff(upper, lowers, writer)
        if res == EMPTY_LAYER:
            return None
        store.meta.add_to_lease(lease, blobs=[res.digest])  # (before the commit: GC cannot take it)
        writer.commit()
    finally:
        writer.abort()  # a no-op once committed
    return Layer(res.digest, str(res), res.size)


def history_entry(created_by: str, *, created: str, author: str = "", comment: str = "",
                  empty_layer: bool = False) -> dict:
    """One entry of an image's history, fields in Docker's order, empty ones left out."""
    entry: dict = {"created": created}
    if author:
        entry["author"] = author
    if created_by:
        entry["created_by"] = created_by
    if comment:
        entry["comment"] = comment
    if empty_layer:
        entry["empty_layer"] = True
    return entry


def child_config(parent: dict | None, layer: Layer | None, config: dict, created_by: str, *,
                 author: str = "", comment: str = "", created: str | None = None,
                 history: dict | None = None) -> dict:
    """The image config of the parent's child (NewChildImage): the parent's history and
    layers plus this step's; ``config`` is the child's run config. ``history`` is the new
    entry as it is (an entry of another image's, for an image restored from it)."""
    parent = parent or {}
    created = (history or {}).get("created") or created or rfc3339_ns()
    host = _platform.host()
    rootfs = parent.get("rootfs") or {}
    diff_ids = list(rootfs.get("diff_ids") or [])
    if layer is not None:
        diff_ids.append(layer.diff_id)
    doc = {"architecture": parent.get("architecture") or host.architecture,
           "config": container_config(config), "created": created, "docker_version": __version__,
           "history": [*(parent.get("history") or []),
                       history or history_entry(created_by, created=created, author=author, comment=comment,
                                                empty_layer=layer is None)],
           "os": parent.get("os") or host.os, "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    if author:
        doc["author"] = author
    if comment:
        doc["comment"] = comment
    for key in ("variant", "os.version", "os.features"):
        if parent.get(key):
            doc[key] = parent[key]
    return {k: doc[k] for k in sorted(doc)}


def new_image(store: ImageStore, parent_id: str | None, layer: Layer | None, config: dict, created_by: str, *,
              author: str = "", comment: str = "", created: str | None = None, history: dict | None = None) -> str:
    """Record the child image of ``parent_id`` (None: scratch) with ``layer`` (None: an empty
    layer) and returns its ID. The layer's blob must be in the content store (and leased)."""
    parent = store.get(parent_id) if parent_id else None
    doc = child_config(parent.config if parent else None, layer, config, created_by, author=author,
                       comment=comment, created=created, history=history)
    config_bytes = json.dumps(doc, separators=(",", ":")).encode()
    layers = [(lr.digest, lr.media_type, lr.blob_size) for lr in (parent.layers if parent else [])]
    if layer is not None:
        layers.append((layer.digest, layer.media_type, layer.size))
    manifest = make_manifest(config_bytes, layers)
    return store.add_image(manifest, config_bytes, [(d, mt) for d, mt, _ in layers], parent=parent_id or "")
