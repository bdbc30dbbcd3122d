"""The images behind the image routes: the engine's image store (so in-use checks and locks
are the engine's) and the image package's transfers on it, with Docker's result shapes."""
from __future__ import annotations

import fnmatch
from typing import BinaryIO

from ..image import archive, distribution
from ..image.store import ImageStore, _parse_time
from .backend import ProgressMessage


def _label_matches(labels: dict, wanted: str) -> bool:
    key, eq, value = wanted.partition("=")
    return key in labels and (not eq or labels[key] == value)


class ImageService:
    def __init__(self, store: ImageStore, insecure_registries: list[str]) -> None:
        self.store = store
        self.insecure_registries = insecure_registries

    def summaries(self, all: bool = False, filters: dict[str, list[str]] | None = None) -> list[dict]:
        """``GET /images/json``: newest first; intermediate images only with ``all``."""
        filters = filters or {}
        out = []
        for img in self.store.list():
            if "dangling" in filters:
                if img.dangling != (filters["dangling"][0].lower() in ("1", "true")):
                    continue
            elif not all and img.dangling and self.store.meta.children(img.id):
                continue
            if "reference" in filters and not any(
                    fnmatch.fnmatch(tag, pattern) or fnmatch.fnmatch(tag.split(":")[0], pattern)
                    for tag in img.repo_tags for pattern in filters["reference"]):
                continue
            labels = (img.config.get("config") or {}).get("Labels") or {}
            if "label" in filters and not all(_label_matches(labels, f) for f in filters["label"]):
                continue
            out.append({"Id": img.id, "ParentId": img.parent, "RepoTags": img.repo_tags or [],
                        "RepoDigests": img.repo_digests or [], "Created": _parse_time(img.created),
                        "Size": img.size, "SharedSize": -1, "VirtualSize": img.size,
                        "Labels": labels, "Containers": -1})
        out.sort(key=lambda d: -d["Created"])
        return out

    def inspect(self, name: str) -> dict:
        return self.store.inspect(name)

    def history(self, name: str) -> list[dict]:
        return self.store.history(name)

    def tag(self, name: str, reference: str) -> None:
        self.store.tag(self.store.resolve(name).id, reference)

    def remove(self, name: str, force: bool = False, prune: bool = True) -> list[dict]:
        return self.store.remove(name, force, prune)

    def prune(self, dangling_only: bool = True) -> dict:
        return self.store.prune(dangling_only)

    def check_names(self, names: list[str]) -> None:
        for name in names:
            self.store.resolve(name)

    def load(self, src: BinaryIO, progress: ProgressMessage | None) -> list[str]:
        """``docker load``: the lines dockerd streams for what was loaded."""
        lines = []
        for item in archive.load(self.store, src):
            for tag, old in item.replaced:
                lines.append(f"The image {tag} already exists, renaming the old one with ID {old} to empty string")
            lines.extend(f"Loaded image: {tag}" for tag in item.tags)
            if not item.tags:
                lines.append(f"Loaded image ID: {item.id}")
        return lines

    def save(self, names: list[str], out: BinaryIO) -> None:
        archive.save(self.store, names, out)

    def pull(self, reference: str, progress: ProgressMessage) -> None:
        def on(event: str, digest: str, done: int, total: int) -> None:
            short = digest.split(":", 1)[-1][:12]
            if event == "progress":
                progress({"status": "Downloading", "progressDetail": {"current": done, "total": total}, "id": short})
            elif event == "exists":
                progress({"status": "Already exists", "progressDetail": {}, "id": short})
            elif event == "done":
                progress({"status": "Pull complete", "progressDetail": {}, "id": short})

        res = distribution.pull_image(self.store, reference, progress=on, insecure=self.insecure_registries)
        progress({"status": f"Digest: {res.digest}"})
        progress({"status": f"Status: Image is up to date for {res.reference}" if res.up_to_date
                  else f"Status: Downloaded newer image for {res.reference}"})
