"""The build cache: which image a step made from which parent, persisted in state.db.

A step's key is its parent image ID and its *probe config*: the run config the step is
committed with, whose Cmd names the step (``/bin/sh -c #(nop)  ENV A=b``, ``|1 V=2 /bin/sh
-c make``, ``#(nop) COPY file:<content hash> in /x``). That is what Docker's legacy builder
compares a parent's children with, so the same things hit and miss: the expanded
instruction, the build args a RUN sees, the content COPY/ADD take, and every config field
an earlier step set. Entries whose image is gone are ignored (and dropped by ``prune``).
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time

from .. import statedb
from ..image.store import ImageError, ImageStore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS build_cache (
    key TEXT PRIMARY KEY,
    parent TEXT NOT NULL,
    image_id TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created REAL NOT NULL,
    last_used REAL NOT NULL,
    uses INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS build_cache_image ON build_cache (image_id);
"""


def step_key(parent_id: str, probe_config: dict) -> str:
    """The cache key of a step: its parent and its probe config, canonically encoded."""
    text = json.dumps(probe_config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{parent_id}\n{text}".encode()).hexdigest()


class BuildCache:
    """Step key -> image ID, in the engine root's state.db (one connection, used under a lock:
    parallel stages share it)."""

    def __init__(self, root: str) -> None:
        self._conn = statedb.connect(root, _SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT image_id FROM build_cache WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def touch(self, key: str) -> None:
        """Record a hit (``last_used``, which /system/df reports)."""
        with self._lock, statedb.transaction(self._conn) as c:
            c.execute("UPDATE build_cache SET last_used = ?, uses = uses + 1 WHERE key = ?", (time.time(), key))

    def put(self, key: str, parent_id: str, image_id: str, created_by: str) -> None:
        now = time.time()
        with self._lock, statedb.transaction(self._conn) as c:
            c.execute("INSERT OR REPLACE INTO build_cache (key, parent, image_id, created_by, created, last_used) "
                      "VALUES (?, ?, ?, ?, ?, ?)", (key, parent_id, image_id, created_by, now, now))

    def entries(self) -> list[sqlite3.Row]:
        """Every entry: key, parent, image_id, created_by, created, last_used, uses."""
        with self._lock:
            cur = self._conn.execute("SELECT key, parent, image_id, created_by, created, last_used, uses "
                                     "FROM build_cache ORDER BY created")
            cur.row_factory = sqlite3.Row
            return cur.fetchall()

    def forget(self, keys: list[str]) -> None:
        with self._lock, statedb.transaction(self._conn) as c:
            c.executemany("DELETE FROM build_cache WHERE key = ?", [(k,) for k in keys])

    def prune(self, store: ImageStore, until: float | None = None) -> tuple[list[str], int]:
        """Forget the entries (made before ``until``, if given) and remove their images that
        nothing else keeps: untagged, used by no container, parent of no kept image.
        Returns (the entries' keys, bytes freed)."""
        rows = [r for r in self.entries() if until is None or r["created"] < until]
        self.forget([r["key"] for r in rows])
        kept = {r["image_id"] for r in self.entries()}
        before = sum(store.disk_usage().values())
        candidates = {r["image_id"] for r in rows} - kept
        removed = True
        while removed:   # children first: a chain of steps goes in one call
            removed = False
            for image_id in sorted(candidates):
                row = store.meta.image(image_id)
                if row is None:
                    candidates.discard(image_id)
                    removed = True
                    break
                if store.meta.children(image_id) or store.meta.refs_of(image_id) or store.in_use(image_id):
                    continue
                try:
                    store.remove(image_id)
                except ImageError:
                    continue
                candidates.discard(image_id)
                removed = True
                break
        return [r["key"] for r in rows], max(0, before - sum(store.disk_usage().values()))
