"""Garbage collection of blobs and layer snapshots nothing refers to.

Mark and sweep run inside one write transaction of state.db: every image, container
rootfs and unexpired lease committed before it is seen, and nothing can be recorded
while it runs, so a blob or snapshot in use is never removed. Snapshot directories are
renamed to ``snapshots/trash-*`` inside the transaction and deleted after it. Ingests
(content partials and snapshot unpacks) that a writer still holds (flock) are never
touched; idle content partials are kept ``ingest_age`` seconds so a pull can resume.
"""
from __future__ import annotations

import fcntl
import os
import re
import secrets
import time
from dataclasses import dataclass, field

from ..runtime.fsutil import remove_tree
from .content import ContentStore
from .metadata import Metadata
from .snapshots import Snapshotter

_NUMERIC = re.compile(r"^[0-9]+$")


@dataclass
class GCResult:
    blobs: list[str] = field(default_factory=list)        # digests removed
    layers: list[str] = field(default_factory=list)       # diff_ids whose snapshots were removed
    ingests: list[str] = field(default_factory=list)      # partial files/dirs removed
    bytes_freed: int = 0


def _du(path: str) -> int:
    total = 0
    seen: set[tuple[int, int]] = set()
    stack = [path]
    while stack:
        p = stack.pop()
        try:
            entries = list(os.scandir(p))
        except OSError:
            continue
        for e in entries:
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if e.is_dir(follow_symlinks=False):
                stack.append(e.path)
            elif (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512 if st.st_blocks else st.st_size
    return total


def _remove_if_unlocked(path: str, min_age: float) -> bool:
    """Remove an ingest directory no unpacker holds (and not brand new: an unpacker
    takes its lock just after mkdir). The lock is held while removing."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        if time.time() - os.fstat(fd).st_mtime < min_age:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        remove_tree(path)
        return True
    finally:
        os.close(fd)


def collect(content: ContentStore, meta: Metadata, snapshots: Snapshotter, *, ingest_age: float = 3600.0,
            only_layers: set[str] | None = None, blobs: bool = True) -> GCResult:
    """Remove every blob and layer snapshot nothing refers to; see the module doc.

    ``only_layers`` restricts the snapshot sweep to those diff_ids (cleanup after a
    failed add), ``blobs=False`` skips the blob sweep.
    """
    res = GCResult()
    sdir = snapshots.snapshots_dir
    trash: list[str] = []
    with meta.tx() as c:
        meta.expire_leases(c)
        if blobs:
            keep_blobs = meta.referenced_blobs(c)
            for d in list(content.digests()):
                if d in keep_blobs:
                    continue
                path = content.path(d)
                try:
                    size = os.stat(path).st_size
                    os.unlink(path)
                except FileNotFoundError:
                    continue
                res.blobs.append(d)
                res.bytes_freed += size
            if res.blobs:
                gone = set(res.blobs)
                c.executemany("DELETE FROM layer_blobs WHERE digest = ?", [(d,) for d in gone])
        keep_layers = meta.referenced_layers(c)
        rows = c.execute("SELECT diff_id, snapshot FROM layers").fetchall()
        known_snapshots = set()
        for r in rows:
            diff_id, snap = r["diff_id"], r["snapshot"]
            if snap is not None:
                known_snapshots.add(str(snap))
            if diff_id in keep_layers or (only_layers is not None and diff_id not in only_layers):
                continue
            if snap is not None:
                src = os.path.join(sdir, str(snap))
                if os.path.lexists(src):
                    dst = os.path.join(sdir, f"trash-{snap}-{secrets.token_hex(4)}")
                    os.rename(src, dst)
                    trash.append(dst)
            c.execute("DELETE FROM layers WHERE diff_id = ?", (diff_id,))
            res.layers.append(diff_id)
        if only_layers is None:
            # Directories no row knows about: crash leftovers (rename done, commit lost).
            for name in os.listdir(sdir):
                if _NUMERIC.match(name) and name not in known_snapshots:
                    dst = os.path.join(sdir, f"trash-{name}-{secrets.token_hex(4)}")
                    os.rename(os.path.join(sdir, name), dst)
                    trash.append(dst)
    for t in trash:
        res.bytes_freed += _du(t)
        remove_tree(t)
    if only_layers is None:
        for name in os.listdir(sdir):
            path = os.path.join(sdir, name)
            if name.startswith("trash-"):
                remove_tree(path)
            elif name.startswith("ingest-") and _remove_if_unlocked(path, min(ingest_age, 60.0)):
                res.ingests.append(path)
        res.ingests.extend(content.remove_stale_ingests(ingest_age))
    return res
