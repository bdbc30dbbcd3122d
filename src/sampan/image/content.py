"""Content-addressed blobs in OCI image-layout form: ``<root>/blobs/<alg>/<hex>``.

Writes stream through a Writer that hashes as it goes into ``<root>/ingest/`` and moves
the file into place with an atomic rename only after its digest and size are verified,
so a blob under ``blobs/`` is always complete and correct. An ingest for a known digest
can be resumed after an interruption; an ingest in progress holds an flock that GC
respects. Any number of writers may race on the same blob: each writes its own partial
and the first commit wins (the others find the blob already there).
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import secrets
import time
from typing import BinaryIO, Iterator

from .. import errors

_DIGEST_RE = re.compile(r"^(sha256):([a-f0-9]{64})$|^(sha512):([a-f0-9]{128})$")
_CHUNK = 1 << 20


class DigestMismatch(errors.Invalid):
    """A blob's content does not match the digest or size it was announced with."""


class BlobNotFound(FileNotFoundError, errors.NotFound):
    """The content store has no blob with this digest."""

    def __init__(self, digest: str) -> None:
        super().__init__(errno.ENOENT, f"blob not found: {digest}")
        self.digest = digest

    def __str__(self) -> str:
        return f"blob not found: {self.digest}"


def split_digest(digest: str) -> tuple[str, str]:
    """("sha256", hex) for a well-formed digest; ValueError otherwise (never a path)."""
    m = _DIGEST_RE.match(digest or "")
    if not m:
        raise ValueError(f"invalid digest: {digest!r}")
    return (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Writer:
    """One ingest: ``write`` chunks, then ``commit`` (verify, fsync, rename) or ``abort``.

    ``offset`` is how many bytes were already there when an ingest was resumed; the caller
    sends the rest (e.g. with an HTTP Range request starting at ``offset``).
    """

    def __init__(self, store: ContentStore, expected: str | None, size: int | None, resume: bool) -> None:
        self.store = store
        self.expected = expected
        self.size = size
        self.algorithm = "sha256"
        if expected is not None:
            self.algorithm, _ = split_digest(expected)
        self._hash = hashlib.new(self.algorithm)
        self.offset = 0
        self.written = 0
        self.committed: str | None = None
        self._closed = False
        self._fd = -1
        self.path = ""
        os.makedirs(store.ingest_dir, mode=0o700, exist_ok=True)
        fd = -1
        if expected is not None:
            # The shared, resumable ingest for this digest; if someone else is writing it
            # we take a private one instead so that both can proceed.
            path = os.path.join(store.ingest_dir, expected.replace(":", "-"))
            fd = self._lock_shared_ingest(path)
            if fd >= 0:
                self.path = path
                have = os.fstat(fd).st_size
                if not resume or (size is not None and have > size):
                    os.ftruncate(fd, 0)
                    have = 0
                if have:
                    self._rehash(fd, have)
                self.offset = have
                self.written = have
                os.lseek(fd, have, os.SEEK_SET)
        while fd < 0:
            path = os.path.join(store.ingest_dir, f"tmp-{os.getpid()}-{secrets.token_hex(8)}")
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:  # GC may have taken it between create and lock: then take another
                same = os.path.samestat(os.stat(path, follow_symlinks=False), os.fstat(fd))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                fd = -1
                continue
            self.path = path
        self._fd = fd

    @staticmethod
    def _lock_shared_ingest(path: str) -> int:
        """Open and lock ``path``; -1 when another writer holds it."""
        for _ in range(10):
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return -1
            try:
                same = os.path.samestat(os.stat(path, follow_symlinks=False), os.fstat(fd))
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)  # removed (GC, a commit) between open and lock: try again
        return -1

    def _rehash(self, fd: int, have: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        left = have
        while left:
            chunk = os.read(fd, min(_CHUNK, left))
            if not chunk:
                raise OSError(errno.EIO, f"short read re-hashing ingest {self.path}")
            self._hash.update(chunk)
            left -= len(chunk)

    @property
    def digest(self) -> str:
        """Digest of what has been written so far."""
        return f"{self.algorithm}:{self._hash.hexdigest()}"

    def write(self, chunk: bytes | bytearray | memoryview) -> int:
        if self._closed:
            raise ValueError("write to a closed content writer")
        view = memoryview(chunk)
        n = len(view)
        self._hash.update(view)
        while view:
            done = os.write(self._fd, view)
            view = view[done:]
        self.written += n
        if self.size is not None and self.written > self.size:
            self.abort()
            raise DigestMismatch(f"size mismatch for {self.expected or 'blob'}: more than the announced "
                                 f"{self.size} bytes")
        return n

    def commit(self) -> str:
        """Verify digest and size, fsync and move into ``blobs/``; returns the digest."""
        if self.committed:
            return self.committed
        if self._closed:
            raise ValueError("commit of an aborted content writer")
        got = self.digest
        try:
            if self.size is not None and self.written != self.size:
                raise DigestMismatch(f"size mismatch for {self.expected or got}: expected {self.size} bytes, "
                                     f"got {self.written}")
            if self.expected is not None and got != self.expected:
                raise DigestMismatch(f"digest mismatch: expected {self.expected}, got {got} ({self.written} bytes)")
        except DigestMismatch:
            self.abort()
            raise
        target = self.store.path(got)
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        try:
            os.fchmod(self._fd, 0o444)
            os.fsync(self._fd)
            if os.path.exists(target):  # someone else committed it first: same bytes
                os.unlink(self.path)
            else:
                os.rename(self.path, target)
                _fsync_dir(os.path.dirname(target))
        except BaseException:
            self.abort()
            raise
        self._close()
        self.committed = got
        return got

    def abort(self) -> None:
        """Remove the partial (idempotent)."""
        if self._closed:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self._close()

    def close(self) -> None:
        """Stop writing but keep the partial for a later resume (uncommitted)."""
        self._close()

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self._fd)  # releases the flock

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.abort()
        elif not self.committed:
            self.abort()

    def __del__(self) -> None:
        try:
            self._close()
        except Exception:
            pass


class ContentStore:
    """Blobs under ``<root>/blobs/<alg>/<hex>``; partial ingests under ``<root>/ingest/``."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.blobs_dir = os.path.join(self.root, "blobs")
        self.ingest_dir = os.path.join(self.root, "ingest")
        os.makedirs(os.path.join(self.blobs_dir, "sha256"), mode=0o755, exist_ok=True)

    def path(self, digest: str) -> str:
        alg, hexpart = split_digest(digest)
        return os.path.join(self.blobs_dir, alg, hexpart)

    def has(self, digest: str) -> bool:
        try:
            return os.path.isfile(self.path(digest))
        except ValueError:
            return False

    def size(self, digest: str) -> int:
        try:
            return os.stat(self.path(digest)).st_size
        except FileNotFoundError:
            raise BlobNotFound(digest) from None

    def read(self, digest: str) -> bytes:
        """The blob's bytes, verified against its digest."""
        try:
            with open(self.path(digest), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise BlobNotFound(digest) from None
        alg, hexpart = split_digest(digest)
        if hashlib.new(alg, data).hexdigest() != hexpart:
            raise DigestMismatch(f"blob {digest} is corrupt on disk")
        return data

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb", buffering=0)  # type: ignore[return-value]
        except FileNotFoundError:
            raise BlobNotFound(digest) from None

    def put(self, data: bytes, expected: str | None = None) -> str:
        dgst = expected or digest_of(data)
        if expected is None and self.has(dgst):
            return dgst
        with self.writer(expected, size=len(data)) as w:
            w.write(data)
            return w.commit()

    def writer(self, expected: str | None = None, size: int | None = None, resume: bool = False) -> Writer:
        return Writer(self, expected, size, resume)

    def delete(self, digest: str) -> None:
        try:
            os.unlink(self.path(digest))
        except FileNotFoundError:
            pass

    def digests(self) -> Iterator[str]:
        for alg in ("sha256", "sha512"):
            d = os.path.join(self.blobs_dir, alg)
            try:
                names = os.listdir(d)
            except FileNotFoundError:
                continue
            for name in names:
                dg = f"{alg}:{name}"
                if _DIGEST_RE.match(dg):
                    yield dg

    # -- ingests (for GC and for callers that want to show resumable transfers) --
    def ingests(self) -> Iterator[tuple[str, bool, float]]:
        """(path, active, mtime) for each partial; active means a writer holds it."""
        try:
            names = os.listdir(self.ingest_dir)
        except FileNotFoundError:
            return
        for name in names:
            path = os.path.join(self.ingest_dir, name)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    active = False
                    fcntl.flock(fd, fcntl.LOCK_UN)
                except BlockingIOError:
                    active = True
                mtime = os.fstat(fd).st_mtime
            finally:
                os.close(fd)
            yield path, active, mtime

    def remove_stale_ingests(self, older_than: float = 0.0) -> list[str]:
        """Remove partials no writer holds and untouched for ``older_than`` seconds."""
        removed = []
        now = time.time()
        for path, _active, mtime in list(self.ingests()):
            if now - mtime < older_than:
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            except FileNotFoundError:  # committed or removed meanwhile
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                # Still the same file (not replaced meanwhile)? Then it is ours to remove.
                try:
                    st = os.stat(path, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if os.path.samestat(st, os.fstat(fd)):
                    os.unlink(path)
                    removed.append(path)
            finally:
                os.close(fd)
        return removed
