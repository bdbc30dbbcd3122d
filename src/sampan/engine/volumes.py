"""Named and anonymous volumes: ``<root>/volumes/<name>/_data`` with the local driver.

A volume in use by a container cannot be removed (409). An empty volume mounted for the
first time gets the image's content at the mount point copied in (Docker's copy-up).
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import time
from typing import Any

from ..runtime.fsutil import secure_join
from ..timefmt import rfc3339_seconds
from .errors import Conflict, InvalidParameter, NotFound
from .filters import label_matches
from .store import Store

VALID = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")


class Volumes:
    def __init__(self, root: str, store: Store, events: Any = None) -> None:
        self.dir = os.path.join(root, "volumes")
        os.makedirs(self.dir, mode=0o701, exist_ok=True)
        self.store = store
        self.events = events

    def _emit(self, action: str, name: str) -> None:
        if self.events is not None:
            self.events.emit("volume", action, name, {"driver": "local"})

    def _shape(self, v: dict) -> dict:
        return {"CreatedAt": rfc3339_seconds(v["created"]), "Driver": v["driver"], "Labels": v["labels"] or {},
                "Mountpoint": v["mountpoint"], "Name": v["name"], "Options": v["options"] or {}, "Scope": "local"}

    def create(self, name: str = "", driver: str = "local", labels: dict | None = None,
               options: dict | None = None, anonymous: bool = False) -> dict:
        if driver not in ("", "local"):
            raise NotFound(f"plugin \"{driver}\" not found")
        if options:
            raise InvalidParameter("volume driver options are not supported")
        if not name:
            name, anonymous = secrets.token_hex(32), True
        if not VALID.match(name):
            raise InvalidParameter(f"create {name}: \"{name}\" includes invalid characters for a local volume "
                                   "name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass "
                                   "a host directory, use absolute path")
        existing = self.store.volume(name)
        if existing is not None:
            return self._shape(existing)
        vdir = os.path.join(self.dir, name)
        data = os.path.join(vdir, "_data")
        os.makedirs(data, mode=0o755, exist_ok=True)
        v = {"name": name, "driver": "local", "mountpoint": data, "created": time.time(),
             "labels": labels or {}, "options": options or {}, "anonymous": anonymous}
        if not self.store.add_volume(v):
            return self._shape(self.store.volume(name) or v)
        self._emit("create", name)
        return self._shape(v)

    def get(self, name: str) -> dict:
        v = self.store.volume(name)
        if v is None:
            raise NotFound(f"get {name}: no such volume")
        return v

    def inspect(self, name: str) -> dict:
        return self._shape(self.get(name))

    def list(self, filters: dict[str, list[str]] | None = None) -> dict:
        out = []
        for v in self.store.volumes():
            if filters and not self._match(v, filters):
                continue
            out.append(self._shape(v))
        return {"Volumes": out, "Warnings": []}

    def _match(self, v: dict, filters: dict[str, list[str]]) -> bool:
        for key, values in filters.items():
            if not values:
                continue
            if key == "name" and not any(val in v["name"] for val in values):
                return False
            if key == "driver" and v["driver"] not in values:
                return False
            if key == "dangling":
                dangling = not self.store.volume_users(v["name"])
                if (values[0].lower() in ("true", "1")) != dangling:
                    return False
            if key == "label" and not all(label_matches(v["labels"], val) for val in values):
                return False
        return True

    def remove(self, name: str, force: bool = False) -> None:
        v = self.store.volume(name)
        if v is None:
            if force:
                return
            raise NotFound(f"get {name}: no such volume")
        users = self.store.delete_volume_if_unused(name)
        if users:
            raise Conflict(f"remove {name}: volume is in use - [{', '.join(users)}]")
        shutil.rmtree(os.path.join(self.dir, name), ignore_errors=True)
        self._emit("destroy", name)

    def prune(self, filters: dict[str, list[str]] | None = None) -> dict:
        filters = dict(filters or {})
        include_named = (filters.pop("all", None) or ["false"])[0].lower() in ("true", "1")
        deleted, reclaimed = [], 0
        for v in self.store.volumes():
            if not include_named and not v["anonymous"]:
                continue
            if filters and not self._match(v, filters):
                continue
            size = _du(v["mountpoint"])
            if self.store.delete_volume_if_unused(v["name"]):
                continue
            shutil.rmtree(os.path.join(self.dir, v["name"]), ignore_errors=True)
            self._emit("destroy", v["name"])
            deleted.append(v["name"])
            reclaimed += size
        return {"VolumesDeleted": deleted, "SpaceReclaimed": reclaimed}

    @staticmethod
    def copy_up(rootfs: str, destination: str, data: str) -> None:
        """Copy the image's content at ``destination`` into an empty volume (Docker's copy-up)."""
        if os.listdir(data):
            return
        try:
            src = secure_join(rootfs, destination)
        except OSError:
            return
        if not os.path.isdir(src) or not os.listdir(src):
            return
        subprocess.run(["cp", "-a", "--", src + "/.", data + "/"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        st = os.stat(src)
        os.chown(data, st.st_uid, st.st_gid)
        os.chmod(data, st.st_mode & 0o7777)


def _du(path: str) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total
