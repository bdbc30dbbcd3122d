"""The engine's SQLite state (state.db under the engine root): WAL, busy timeout, schema per part.

Each part (images, containers, volumes, ...) owns its tables and passes its own schema;
every write happens inside a transaction so a crash never leaves half a change behind.
"""
from __future__ import annotations

import os
import sqlite3


def connect(root: str, schema: str = "") -> sqlite3.Connection:
    """Open <root>/state.db (creating root and file), apply `schema` (idempotent DDL)."""
    os.makedirs(root, mode=0o711, exist_ok=True)
    conn = sqlite3.connect(os.path.join(root, "state.db"), timeout=30, isolation_level=None,
                           check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    if schema:
        conn.executescript(schema)
    return conn


class transaction:
    """`with transaction(conn):` runs the block in BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
