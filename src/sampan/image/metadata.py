"""Image metadata in the engine's state.db: images, tags, layers, container rootfs, leases.

Every write goes through ``Metadata.tx()`` (BEGIN IMMEDIATE … COMMIT, serialised with a
thread lock because one connection is shared by the store's worker threads). GC runs its
mark and sweep inside one such transaction, so anything recorded in a committed
transaction, or held by an unexpired lease, is never collected.
"""
from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from typing import Iterable, Iterator

from .. import statedb

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,                 -- config digest: the image ID docker shows
    manifest_digest TEXT NOT NULL,
    manifest_media_type TEXT NOT NULL,
    config TEXT NOT NULL,                -- the config JSON as stored
    created TEXT NOT NULL DEFAULT '',    -- config "created"
    size INTEGER NOT NULL DEFAULT 0,     -- unpacked bytes of all its layers
    parent TEXT NOT NULL DEFAULT '',     -- docker's Parent (local builds)
    added REAL NOT NULL,
    last_tag_time REAL
);
CREATE TABLE IF NOT EXISTS image_layers (
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    diff_id TEXT NOT NULL,
    blob_digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    blob_size INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (image_id, idx)
);
CREATE INDEX IF NOT EXISTS image_layers_diff ON image_layers(diff_id);
CREATE TABLE IF NOT EXISTS image_blobs (    -- every blob an image keeps alive
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    PRIMARY KEY (image_id, digest)
);
CREATE INDEX IF NOT EXISTS image_blobs_digest ON image_blobs(digest);
CREATE TABLE IF NOT EXISTS tags (
    ref TEXT PRIMARY KEY,                -- full: docker.io/library/busybox:latest or …@sha256:…
    repository TEXT NOT NULL,
    tag TEXT,
    digest TEXT,
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tags_image ON tags(image_id);
CREATE TABLE IF NOT EXISTS layers (
    diff_id TEXT PRIMARY KEY,
    size INTEGER NOT NULL DEFAULT 0,     -- uncompressed tar bytes
    unpacked_size INTEGER NOT NULL DEFAULT 0,
    snapshot INTEGER UNIQUE,             -- <root>/snapshots/<n>/fs, NULL when not unpacked
    state TEXT NOT NULL,                 -- 'ready' (unpacked) or 'verified' (copy mode)
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS layer_blobs (    -- compressed forms known for a diff_id
    digest TEXT PRIMARY KEY,
    diff_id TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS layer_blobs_diff ON layer_blobs(diff_id);
CREATE TABLE IF NOT EXISTS snapshot_seq (id INTEGER PRIMARY KEY AUTOINCREMENT);
CREATE TABLE IF NOT EXISTS rootfs (          -- a container's writable snapshot
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,                  -- 'overlay' or 'copy'
    layers TEXT NOT NULL,                -- JSON list of diff_ids, bottom first
    image_id TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    created REAL NOT NULL,
    expires REAL                         -- NULL: until deleted
);
CREATE TABLE IF NOT EXISTS lease_refs (
    lease TEXT NOT NULL REFERENCES leases(name) ON DELETE CASCADE,
    kind TEXT NOT NULL,                  -- 'blob' or 'layer'
    ref TEXT NOT NULL,
    PRIMARY KEY (lease, kind, ref)
);
"""


class Metadata:
    def __init__(self, root: str) -> None:
        self.conn = statedb.connect(root, SCHEMA)
        self.conn.row_factory = sqlite3.Row
        self.lock = threading.RLock()

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            with statedb.transaction(self.conn) as c:
                yield c

    def query(self, sql: str, args: Iterable[object] = ()) -> list[sqlite3.Row]:
        with self.lock:
            return self.conn.execute(sql, tuple(args)).fetchall()

    def one(self, sql: str, args: Iterable[object] = ()) -> sqlite3.Row | None:
        with self.lock:
            return self.conn.execute(sql, tuple(args)).fetchone()

    # -- images
    def image(self, image_id: str) -> sqlite3.Row | None:
        return self.one("SELECT * FROM images WHERE id = ?", (image_id,))

    def images(self) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM images ORDER BY added DESC, id")

    def image_ids_with_prefix(self, hex_prefix: str) -> list[str]:
        pat = "sha256:" + hex_prefix.replace("%", "").replace("_", "") + "%"
        return [r[0] for r in self.query("SELECT id FROM images WHERE id LIKE ? LIMIT 2", (pat,))]

    def image_layers(self, image_id: str) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM image_layers WHERE image_id = ? ORDER BY idx", (image_id,))

    def children(self, image_id: str) -> list[str]:
        return [r[0] for r in self.query("SELECT id FROM images WHERE parent = ?", (image_id,))]

    @staticmethod
    def put_image(c: sqlite3.Connection, image_id: str, manifest_digest: str, manifest_media_type: str,
                  config: str, created: str, size: int, parent: str = "") -> bool:
        """Insert the image row; False if it already existed (left as it was)."""
        cur = c.execute(
            "INSERT OR IGNORE INTO images (id, manifest_digest, manifest_media_type, config, created, size,"
            " parent, added) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (image_id, manifest_digest, manifest_media_type, config, created, size, parent, time.time()))
        return cur.rowcount == 1

    @staticmethod
    def put_image_layers(c: sqlite3.Connection, image_id: str,
                         layers: list[tuple[str, str, str, int]]) -> None:
        """layers: (diff_id, blob digest, media type, blob size), bottom first."""
        c.executemany(
            "INSERT OR IGNORE INTO image_layers (image_id, idx, diff_id, blob_digest, media_type, blob_size)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [(image_id, i, d, b, m, s) for i, (d, b, m, s) in enumerate(layers)])

    @staticmethod
    def put_image_blobs(c: sqlite3.Connection, image_id: str, digests: Iterable[str]) -> None:
        c.executemany("INSERT OR IGNORE INTO image_blobs (image_id, digest) VALUES (?, ?)",
                      [(image_id, d) for d in set(digests)])

    @staticmethod
    def delete_image(c: sqlite3.Connection, image_id: str) -> None:
        c.execute("DELETE FROM tags WHERE image_id = ?", (image_id,))
        c.execute("DELETE FROM image_layers WHERE image_id = ?", (image_id,))
        c.execute("DELETE FROM image_blobs WHERE image_id = ?", (image_id,))
        c.execute("DELETE FROM images WHERE id = ?", (image_id,))

    # -- tags
    def tag_target(self, ref: str) -> str | None:
        row = self.one("SELECT image_id FROM tags WHERE ref = ?", (ref,))
        return row[0] if row else None

    def refs_of(self, image_id: str) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM tags WHERE image_id = ? ORDER BY created, ref", (image_id,))

    def all_refs(self) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM tags ORDER BY ref")

    @staticmethod
    def set_tag(c: sqlite3.Connection, ref: str, repository: str, tag: str | None, digest: str | None,
                image_id: str) -> str | None:
        """Point ref at image_id; returns the image it pointed at before (or None)."""
        row = c.execute("SELECT image_id FROM tags WHERE ref = ?", (ref,)).fetchone()
        now = time.time()
        c.execute("INSERT OR REPLACE INTO tags (ref, repository, tag, digest, image_id, created)"
                  " VALUES (?, ?, ?, ?, ?, ?)", (ref, repository, tag, digest, image_id, now))
        if tag:
            c.execute("UPDATE images SET last_tag_time = ? WHERE id = ?", (now, image_id))
        return row[0] if row else None

    @staticmethod
    def delete_tag(c: sqlite3.Connection, ref: str) -> str | None:
        row = c.execute("SELECT image_id FROM tags WHERE ref = ?", (ref,)).fetchone()
        if row is None:
            return None
        c.execute("DELETE FROM tags WHERE ref = ?", (ref,))
        return row[0]

    # -- layers
    def layer(self, diff_id: str) -> sqlite3.Row | None:
        return self.one("SELECT * FROM layers WHERE diff_id = ?", (diff_id,))

    def layers(self) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM layers")

    def layer_blob(self, diff_id: str) -> sqlite3.Row | None:
        """A compressed blob known for diff_id that the content store should have."""
        return self.one("SELECT * FROM layer_blobs WHERE diff_id = ? ORDER BY rowid", (diff_id,))

    def layer_blobs(self, diff_id: str) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM layer_blobs WHERE diff_id = ? ORDER BY rowid", (diff_id,))

    @staticmethod
    def put_layer(c: sqlite3.Connection, diff_id: str, size: int, unpacked_size: int, snapshot: int | None,
                  state: str) -> None:
        c.execute("INSERT OR REPLACE INTO layers (diff_id, size, unpacked_size, snapshot, state, created)"
                  " VALUES (?, ?, ?, ?, ?, ?)", (diff_id, size, unpacked_size, snapshot, state, time.time()))

    @staticmethod
    def put_layer_blob(c: sqlite3.Connection, digest: str, diff_id: str, media_type: str, size: int) -> None:
        c.execute("INSERT OR REPLACE INTO layer_blobs (digest, diff_id, media_type, size) VALUES (?, ?, ?, ?)",
                  (digest, diff_id, media_type, size))

    @staticmethod
    def next_snapshot_id(c: sqlite3.Connection) -> int:
        cur = c.execute("INSERT INTO snapshot_seq DEFAULT VALUES")
        n = cur.lastrowid
        c.execute("DELETE FROM snapshot_seq WHERE id < ?", (n,))
        return int(n)  # type: ignore[arg-type]

    # -- container rootfs
    def rootfs(self, key: str) -> sqlite3.Row | None:
        return self.one("SELECT * FROM rootfs WHERE key = ?", (key,))

    def rootfs_all(self) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM rootfs ORDER BY created")

    @staticmethod
    def put_rootfs(c: sqlite3.Connection, key: str, kind: str, layers: list[str], image_id: str = "") -> None:
        c.execute("INSERT INTO rootfs (key, kind, layers, image_id, created) VALUES (?, ?, ?, ?, ?)",
                  (key, kind, json.dumps(layers), image_id, time.time()))

    @staticmethod
    def delete_rootfs(c: sqlite3.Connection, key: str) -> None:
        c.execute("DELETE FROM rootfs WHERE key = ?", (key,))

    # -- leases
    def create_lease(self, name: str | None = None, expires_in: float | None = 3600.0,
                     blobs: Iterable[str] = (), layers: Iterable[str] = ()) -> str:
        name = name or "lease-" + secrets.token_hex(8)
        now = time.time()
        with self.tx() as c:
            c.execute("INSERT OR REPLACE INTO leases (name, created, expires) VALUES (?, ?, ?)",
                      (name, now, None if expires_in is None else now + expires_in))
            self._add_refs(c, name, blobs, layers)
        return name

    def add_to_lease(self, name: str, blobs: Iterable[str] = (), layers: Iterable[str] = ()) -> None:
        with self.tx() as c:
            if c.execute("SELECT 1 FROM leases WHERE name = ?", (name,)).fetchone() is None:
                raise KeyError(f"no such lease: {name}")
            self._add_refs(c, name, blobs, layers)

    @staticmethod
    def _add_refs(c: sqlite3.Connection, name: str, blobs: Iterable[str], layers: Iterable[str]) -> None:
        rows = [(name, "blob", b) for b in blobs] + [(name, "layer", d) for d in layers]
        c.executemany("INSERT OR IGNORE INTO lease_refs (lease, kind, ref) VALUES (?, ?, ?)", rows)

    def delete_lease(self, name: str) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM lease_refs WHERE lease = ?", (name,))
            c.execute("DELETE FROM leases WHERE name = ?", (name,))

    def leases(self) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM leases ORDER BY created")

    @staticmethod
    def expire_leases(c: sqlite3.Connection, now: float | None = None) -> int:
        now = time.time() if now is None else now
        names = [r[0] for r in c.execute("SELECT name FROM leases WHERE expires IS NOT NULL AND expires < ?",
                                         (now,)).fetchall()]
        for n in names:
            c.execute("DELETE FROM lease_refs WHERE lease = ?", (n,))
            c.execute("DELETE FROM leases WHERE name = ?", (n,))
        return len(names)

    # -- what GC must keep (call inside the GC transaction)
    @staticmethod
    def referenced_blobs(c: sqlite3.Connection) -> set[str]:
        out: set[str] = set()
        for sql in ("SELECT id FROM images", "SELECT manifest_digest FROM images",
                    "SELECT blob_digest FROM image_layers", "SELECT digest FROM image_blobs",
                    "SELECT ref FROM lease_refs WHERE kind = 'blob'"):
            out.update(r[0] for r in c.execute(sql))
        # Copy-mode containers are made from the blobs of their layers.
        for r in c.execute("SELECT layers FROM rootfs WHERE kind = 'copy'"):
            for d in json.loads(r[0]):
                out.update(x[0] for x in c.execute("SELECT digest FROM layer_blobs WHERE diff_id = ?", (d,)))
        return out

    @staticmethod
    def referenced_layers(c: sqlite3.Connection) -> set[str]:
        out: set[str] = set()
        out.update(r[0] for r in c.execute("SELECT diff_id FROM image_layers"))
        out.update(r[0] for r in c.execute("SELECT ref FROM lease_refs WHERE kind = 'layer'"))
        for r in c.execute("SELECT layers FROM rootfs"):
            out.update(json.loads(r[0]))
        return out
