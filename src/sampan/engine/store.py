"""The engine's tables in state.db: containers, names, volumes, volume references, execs.

Rows hold JSON documents (config, host config, state) next to the columns queried on;
every change runs in ``statedb.transaction`` (BEGIN IMMEDIATE), so a name is taken or not,
never half.
"""
from __future__ import annotations

import json
import sqlite3
import threading
from typing import Any, Callable, Iterator

from .. import statedb
from ..statedb import transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS containers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    image_id TEXT NOT NULL,
    image_ref TEXT NOT NULL,
    created REAL NOT NULL,
    config TEXT NOT NULL,
    host_config TEXT NOT NULL,
    mounts TEXT NOT NULL,
    state TEXT NOT NULL,
    networks TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS names (
    name TEXT PRIMARY KEY,
    container_id TEXT NOT NULL REFERENCES containers(id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS volumes (
    name TEXT PRIMARY KEY,
    driver TEXT NOT NULL,
    mountpoint TEXT NOT NULL,
    created REAL NOT NULL,
    labels TEXT NOT NULL,
    options TEXT NOT NULL,
    anonymous INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS volume_refs (
    volume TEXT NOT NULL REFERENCES volumes(name),
    container_id TEXT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
    PRIMARY KEY (volume, container_id)
);
CREATE TABLE IF NOT EXISTS execs (
    id TEXT PRIMARY KEY,
    container_id TEXT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
    config TEXT NOT NULL,
    state TEXT NOT NULL
);
"""


class NameTaken(Exception):
    def __init__(self, name: str, owner: str) -> None:
        super().__init__(name)
        self.name, self.owner = name, owner


class Store:
    def __init__(self, root: str) -> None:
        self.conn = statedb.connect(root, SCHEMA)
        self.conn.row_factory = sqlite3.Row
        self.lock = threading.RLock()
        with self.tx() as c:  # a state.db of a release before networks
            if "networks" not in {r[1] for r in c.execute("PRAGMA table_info(containers)")}:
                c.execute("ALTER TABLE containers ADD COLUMN networks TEXT NOT NULL DEFAULT '{}'")

    def close(self) -> None:
        self.conn.close()

    def tx(self) -> transaction:
        return transaction(self.conn)

    # -------------------------------------------------------------- containers
    @staticmethod
    def _row(row: sqlite3.Row) -> dict[str, Any]:
        return {"id": row["id"], "name": row["name"], "image_id": row["image_id"], "image_ref": row["image_ref"],
                "created": row["created"], "config": json.loads(row["config"]),
                "host_config": json.loads(row["host_config"]), "mounts": json.loads(row["mounts"]),
                "state": json.loads(row["state"]), "networks": json.loads(row["networks"])}

    def add_container(self, rec: dict[str, Any]) -> None:
        with self.lock, self.tx() as c:
            owner = c.execute("SELECT container_id FROM names WHERE name = ?", (rec["name"],)).fetchone()
            if owner is not None:
                raise NameTaken(rec["name"], owner[0])
            c.execute("INSERT INTO containers VALUES (?,?,?,?,?,?,?,?,?,?)",
                      (rec["id"], rec["name"], rec["image_id"], rec["image_ref"], rec["created"],
                       json.dumps(rec["config"]), json.dumps(rec["host_config"]), json.dumps(rec["mounts"]),
                       json.dumps(rec["state"]), json.dumps(rec.get("networks") or {})))
            c.execute("INSERT INTO names VALUES (?, ?)", (rec["name"], rec["id"]))
            for m in rec["mounts"]:
                if m.get("Type") == "volume" and m.get("Name"):
                    c.execute("INSERT OR IGNORE INTO volume_refs VALUES (?, ?)", (m["Name"], rec["id"]))

    def get(self, cid: str) -> dict[str, Any] | None:
        with self.lock:
            row = self.conn.execute("SELECT * FROM containers WHERE id = ?", (cid,)).fetchone()
        return self._row(row) if row else None

    def find(self, ref: str) -> list[dict[str, Any]]:
        """Docker's lookup: full id, then exact name, then unique id prefix."""
        name = ref.lstrip("/")
        with self.lock:
            row = self.conn.execute("SELECT * FROM containers WHERE id = ?", (ref,)).fetchone()
            if row is None:
                row = self.conn.execute("SELECT c.* FROM containers c JOIN names n ON n.container_id = c.id "
                                        "WHERE n.name = ?", (name,)).fetchone()
            if row is not None:
                return [self._row(row)]
            if not ref or not all(ch in "0123456789abcdef" for ch in ref):
                return []
            rows = self.conn.execute("SELECT * FROM containers WHERE substr(id, 1, ?) = ?",
                                     (len(ref), ref)).fetchall()
        return [self._row(r) for r in rows]

    def all(self) -> list[dict[str, Any]]:
        with self.lock:
            rows = self.conn.execute("SELECT * FROM containers ORDER BY created DESC").fetchall()
        return [self._row(r) for r in rows]

    def update_state(self, cid: str, check: Callable[[dict[str, Any]], None] | None = None,
                     **changes: Any) -> dict[str, Any]:
        """Applies changes to the container's state; check(current state), in the same
        transaction, may refuse them by raising."""
        with self.lock, self.tx() as c:
            row = c.execute("SELECT state FROM containers WHERE id = ?", (cid,)).fetchone()
            if row is None:
                raise KeyError(cid)
            state = json.loads(row[0])
            if check is not None:
                check(state)
            state.update(changes)
            c.execute("UPDATE containers SET state = ? WHERE id = ?", (json.dumps(state), cid))
        return state

    def update_networks(self, cid: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """change(the container's endpoint requests) edits them in place, in one transaction
        (it may refuse by raising)."""
        return self._update_document(cid, "networks", change)

    def update_host_config(self, cid: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        return self._update_document(cid, "host_config", change)

    def _update_document(self, cid: str, column: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        with self.lock, self.tx() as c:
            row = c.execute(f"SELECT {column} FROM containers WHERE id = ?", (cid,)).fetchone()
            if row is None:
                raise KeyError(cid)
            doc = json.loads(row[0])
            change(doc)
            c.execute(f"UPDATE containers SET {column} = ? WHERE id = ?", (json.dumps(doc), cid))
        return doc

    def rename(self, cid: str, new: str) -> None:
        with self.lock, self.tx() as c:
            owner = c.execute("SELECT container_id FROM names WHERE name = ?", (new,)).fetchone()
            if owner is not None:
                raise NameTaken(new, owner[0])
            c.execute("DELETE FROM names WHERE container_id = ?", (cid,))
            c.execute("INSERT INTO names VALUES (?, ?)", (new, cid))
            c.execute("UPDATE containers SET name = ? WHERE id = ?", (new, cid))

    def delete_container(self, cid: str) -> None:
        with self.lock, self.tx() as c:
            c.execute("DELETE FROM containers WHERE id = ?", (cid,))

    def names_taken(self) -> set[str]:
        with self.lock:
            return {r[0] for r in self.conn.execute("SELECT name FROM names")}

    # -------------------------------------------------------------- volumes
    @staticmethod
    def _vrow(row: sqlite3.Row) -> dict[str, Any]:
        return {"name": row["name"], "driver": row["driver"], "mountpoint": row["mountpoint"],
                "created": row["created"], "labels": json.loads(row["labels"]),
                "options": json.loads(row["options"]), "anonymous": bool(row["anonymous"])}

    def add_volume(self, v: dict[str, Any]) -> bool:
        """Insert; False when a volume of that name exists already."""
        with self.lock, self.tx() as c:
            if c.execute("SELECT 1 FROM volumes WHERE name = ?", (v["name"],)).fetchone():
                return False
            c.execute("INSERT INTO volumes VALUES (?,?,?,?,?,?,?)",
                      (v["name"], v["driver"], v["mountpoint"], v["created"], json.dumps(v["labels"]),
                       json.dumps(v["options"]), int(v.get("anonymous", False))))
            return True

    def volume(self, name: str) -> dict[str, Any] | None:
        with self.lock:
            row = self.conn.execute("SELECT * FROM volumes WHERE name = ?", (name,)).fetchone()
        return self._vrow(row) if row else None

    def volumes(self) -> list[dict[str, Any]]:
        with self.lock:
            rows = self.conn.execute("SELECT * FROM volumes ORDER BY name").fetchall()
        return [self._vrow(r) for r in rows]

    def volume_users(self, name: str) -> list[str]:
        with self.lock:
            return [r[0] for r in self.conn.execute("SELECT container_id FROM volume_refs WHERE volume = ?",
                                                    (name,))]

    def delete_volume_if_unused(self, name: str) -> list[str]:
        """Delete the row unless containers use it; returns the users (empty when deleted)."""
        with self.lock, self.tx() as c:
            users = [r[0] for r in c.execute("SELECT container_id FROM volume_refs WHERE volume = ?", (name,))]
            if not users:
                c.execute("DELETE FROM volumes WHERE name = ?", (name,))
            return users

    # -------------------------------------------------------------- execs
    def add_exec(self, eid: str, cid: str, config: dict, state: dict) -> None:
        with self.lock, self.tx() as c:
            c.execute("INSERT INTO execs VALUES (?,?,?,?)", (eid, cid, json.dumps(config), json.dumps(state)))

    def exec(self, eid: str) -> dict[str, Any] | None:
        with self.lock:
            row = self.conn.execute("SELECT * FROM execs WHERE id = ?", (eid,)).fetchone()
        if row is None:
            return None
        return {"id": row["id"], "container_id": row["container_id"], "config": json.loads(row["config"]),
                "state": json.loads(row["state"])}

    def update_exec(self, eid: str, only_if: Callable[[dict[str, Any]], bool] | None = None,
                    **changes: Any) -> None:
        """Applies changes to the exec's state, unless only_if(current state) says no (in the
        same transaction)."""
        with self.lock, self.tx() as c:
            row = c.execute("SELECT state FROM execs WHERE id = ?", (eid,)).fetchone()
            if row is None:
                return
            state = json.loads(row[0])
            if only_if is not None and not only_if(state):
                return
            state.update(changes)
            c.execute("UPDATE execs SET state = ? WHERE id = ?", (json.dumps(state), eid))

    def running_execs(self) -> list[str]:
        """The ids of the execs recorded as running."""
        with self.lock:
            rows = self.conn.execute("SELECT id, state FROM execs").fetchall()
        return [r[0] for r in rows if json.loads(r[1]).get("Running")]

    def execs_of(self, cid: str) -> list[str]:
        with self.lock:
            return [r[0] for r in self.conn.execute("SELECT id FROM execs WHERE container_id = ?", (cid,))]

    def iter_ids(self) -> Iterator[str]:
        with self.lock:
            ids = [r[0] for r in self.conn.execute("SELECT id FROM containers")]
        yield from ids
