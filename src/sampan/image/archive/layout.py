"""What load, save and import share: paths inside archives (``blobs/<alg>/<hex>`` of an OCI
image layout), the layout's fixed documents and annotations, manifests made for images, the
progress callback and the one error of the package."""
from __future__ import annotations

import json
from typing import Callable

from ...oci import mediatypes
from ..content import digest_of, split_digest
from ..store import InvalidImage

# progress(event, key, done, total): events "start", "progress", "done" per layer or blob.
Progress = Callable[[str, str, int, int], None]

ANNOTATION_NAME = "io.containerd.image.name"
ANNOTATION_REF = "org.opencontainers.image.ref.name"
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'

CHUNK = 1 << 20               # bytes copied at a time
DOC_MAX = 32 << 20            # a JSON document (manifest, config, index) is never this big


class ArchiveError(InvalidImage):
    """The archive is unreadable, incomplete or inconsistent (one line)."""


def clean(name: str) -> str | None:
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


def blob_path(digest: str) -> str:
    alg, hexpart = split_digest(digest)
    return f"blobs/{alg}/{hexpart}"


def digest_of_path(path: str) -> str | None:
    """``blobs/sha256/<hex>`` names its digest."""
    parts = path.split("/")
    if len(parts) == 3 and parts[0] == "blobs":
        try:
            split_digest(f"{parts[1]}:{parts[2]}")
        except ValueError:
            return None
        return f"{parts[1]}:{parts[2]}"
    return None


def parse_json(data: bytes, what: str) -> object:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ArchiveError(f"invalid {what}: {e}") from None


def compact(doc: object) -> bytes:
    """JSON as the archive stores it: no whitespace."""
    return json.dumps(doc, separators=(",", ":")).encode()


def make_manifest(config: bytes, layers: list[tuple[str, str, int]]) -> bytes:
    """An OCI manifest for a config and its layers (blob digest, media type, size)."""
    doc = {"schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST,
           "config": {"mediaType": mediatypes.OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
           "layers": [{"mediaType": mt, "digest": d, "size": s} for d, mt, s in layers]}
    return compact(doc)
