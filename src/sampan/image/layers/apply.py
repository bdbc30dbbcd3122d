"""Applying a layer: ``apply`` unpacks a layer blob (tar, gzip, zstd, xz, bzip2; OCI
whiteouts) into a directory, ``verify`` only reads and checks it.

``apply`` makes every change with plain ``os`` calls that never follow a symlink: names are
cleaned lexically, ``..`` that climbs out is refused, absolute names are taken relative to
the layer root, and a parent directory must be a real directory (a symlink created by the
same layer is refused; in flat mode a non-directory left by an earlier layer is replaced by
a directory, which is what the overlay view of the same layers shows). Hardlinks must point
at something already unpacked inside the root. The diff_id (sha256 of the uncompressed tar)
and the compressed digest are computed while streaming, in one pass.

Two modes: ``overlay`` unpacks one layer into its own empty directory and stores
whiteouts the way overlayfs reads them (a 0/0 character device, ``trusted.overlay.opaque``);
``flat`` applies onto an existing tree and deletes what the whiteouts name.
Each call is independent: callers run several in threads (zlib, zstd, sha256 and file
writes all release the GIL), and within one call decompressing overlaps the file writes.
"""
from __future__ import annotations

import errno
import os
import queue
import stat
import threading
from typing import Any, BinaryIO, Iterator

from ...runtime.fsutil import remove_tree
from .compression import BlobReader, Hashed, uncompressed_chunks
from .format import OVERLAY_OPAQUE_XATTR, OVERLAY_XATTR_PREFIXES, REGTYPES, WHITEOUT_META_PREFIX, \
    WHITEOUT_OPAQUE, WHITEOUT_PREFIX, LayerError, show
from .tarread import Header, TarStream, iter_headers


class ApplyResult(tuple):
    """``(diff_id, size)`` — size is the uncompressed tar's length — with more attributes:
    ``digest``/``compressed_size`` (the blob as read), ``compression``, ``unpacked_size``
    (bytes of regular-file content, hardlinks once), ``entries``."""

    def __new__(cls, diff_id: str, size: int, **extra: object) -> ApplyResult:
        self = super().__new__(cls, (diff_id, size))
        self.__dict__.update(extra)
        return self

    @property
    def diff_id(self) -> str:
        return self[0]

    @property
    def size(self) -> int:
        return self[1]



class _Prefetch:
    """Runs an iterator in a thread, a few chunks ahead of the consumer: decompressing and
    hashing (both release the GIL) overlap with the file writes."""

    _END = object()

    def __init__(self, it: Iterator[bytes], depth: int = 8) -> None:
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.done = False
        self.t = threading.Thread(target=self._run, args=(it,), name="layer-read", daemon=True)
        self.t.start()

    def _put(self, item: object) -> bool:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, it: Iterator[bytes]) -> None:
        try:
            for chunk in it:
                if not self._put(chunk):
                    return
            self._put(self._END)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            self._put(e)

    def __iter__(self) -> Iterator[bytes]:
        while not self.done:
            item = self.q.get()
            if item is self._END:
                self.done = True
                return
            if isinstance(item, BaseException):
                self.done = True
                raise item
            yield item  # type: ignore[misc]

    def close(self) -> None:
        self.stop.set()
        self.t.join()


def _clean(name: bytes, what: str = "entry") -> list[bytes]:
    parts: list[bytes] = []
    for comp in name.split(b"/"):
        if comp in (b"", b"."):
            continue
        if comp == b"..":
            if not parts:
                raise LayerError(f"refusing {what} {show(name)}: path escapes the layer root")
            parts.pop()
        else:
            parts.append(comp)
    return parts


_IGNORED_XATTR_ERRNOS = (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM)
_S_IFDIR = stat.S_IFDIR
_S_IFLNK = stat.S_IFLNK
_S_IFREG = stat.S_IFREG
_WHITEOUT = -1  # kind recorded for an overlay whiteout we made


class _Applier:
    def __init__(self, dest: str, overlay: bool) -> None:
        self.root = os.fsencode(os.path.abspath(dest))
        self.overlay = overlay
        self.seen: dict[bytes, int] = {}     # rel path -> kind, for what this layer made
        self.dirs: set[bytes] = {b""}        # rel paths known to be real directories
        self.dir_times: list[tuple[bytes, int, int]] = []
        self.unpacked = 0
        self.entries = 0
        self._pending_opaque = False

    # -- paths
    def _abs(self, rel: bytes) -> bytes:
        return self.root + b"/" + rel if rel else self.root

    def _forget(self, rel: bytes) -> None:
        """``rel`` (and everything under it) is gone: drop it from the caches."""
        pre = rel + b"/"
        if rel in self.dirs:
            self.dirs = {d for d in self.dirs if d != rel and not d.startswith(pre)}
            for k in [k for k in self.seen if k.startswith(pre)]:
                del self.seen[k]
        self.seen.pop(rel, None)

    def _parent(self, parts: list[bytes], name: bytes, create: bool = True) -> bytes | None:
        """rel path of the parent directory, made real; None if missing and not create."""
        rel = b""
        for comp in parts[:-1]:
            rel = rel + b"/" + comp if rel else comp
            if rel in self.dirs:
                continue
            kind = self.seen.get(rel)
            path = self._abs(rel)
            if kind is not None:
                if kind == _S_IFLNK:
                    raise LayerError(f"refusing entry {show(name)}: its parent "
                                     f"{show(rel)} is a symlink in the same layer")
                if kind == _WHITEOUT:
                    if not create:
                        return None
                    # Lower one deleted, a new directory implied: it hides all it had.
                    os.unlink(path)
                    os.mkdir(path, 0o755)
                    self._set_opaque(path)
                    self.seen[rel] = _S_IFDIR
                    self.dirs.add(rel)
                    continue
                raise LayerError(f"refusing entry {show(name)}: its parent {show(rel)} is not a directory")
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                st = None
            if st is not None and stat.S_ISDIR(st.st_mode):
                self.dirs.add(rel)
                continue
            if not create:
                return None
            if st is not None:
                # flat mode: a non-directory from an earlier layer; the overlay view of
                # these layers shows this layer's directory instead, so do the same.
                os.unlink(path)
            os.mkdir(path, 0o755)
            self.seen[rel] = _S_IFDIR
            self.dirs.add(rel)
        return rel

    def _clear(self, rel: bytes, new_is_dir: bool) -> bool:
        """Make room for a new entry at rel; True if an existing directory is kept."""
        path = self._abs(rel)
        if self.overlay:
            kind = self.seen.get(rel)
            if kind is None:
                return False
            is_dir = kind == _S_IFDIR
        else:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                return False
            is_dir = stat.S_ISDIR(st.st_mode)
        if is_dir and new_is_dir:
            self.dirs.add(rel)
            return True
        if is_dir:
            remove_tree(os.fsdecode(path))
        else:
            os.unlink(path)
        self._forget(rel)
        return False

    # -- metadata
    def _xattrs(self, target: bytes | int, h: Header, follow: bool = True) -> None:
        for key, value in h.xattrs.items():
            if key.startswith(OVERLAY_XATTR_PREFIXES):
                continue  # never let an archive steer overlayfs
            try:
                if isinstance(target, int):
                    os.setxattr(target, key, value)
                else:
                    os.setxattr(target, key, value, follow_symlinks=follow)
            except OSError as e:
                if e.errno in _IGNORED_XATTR_ERRNOS:
                    continue
                raise LayerError(f"cannot set xattr {key} on {show(h.name)}: {e.strerror}") from None

    @staticmethod
    def _times(h: Header) -> tuple[int, int]:
        mt = h.mtime_ns
        return (h.atime_ns if h.atime_ns is not None else mt, mt)

    def _set_opaque(self, path: bytes) -> None:
        os.setxattr(path, OVERLAY_OPAQUE_XATTR, b"y", follow_symlinks=False)

    # -- entries
    def entry(self, h: Header, stream: TarStream) -> None:
        self.entries += 1
        t = h.type
        name = h.name
        if t in REGTYPES and name.endswith(b"/"):
            t = b"5"  # old tars mark directories by a trailing slash
        parts = _clean(name)
        base = parts[-1] if parts else b""
        if base.startswith(WHITEOUT_PREFIX):
            stream.skip_member(h.size)
            self._whiteout(parts, name)
            return
        if not parts:  # the layer root itself: keep it, take its metadata
            if t == b"5":
                self._dir_meta(b"", self.root, h)
            stream.skip_member(h.size)
            return
        if t in REGTYPES:
            self._file(parts, h, stream)
            stream.skip_padding(h.size)
            return
        stream.skip_member(h.size)  # non-files carry no data worth keeping
        if t == b"5":
            self._dir(parts, h)
        elif t == b"2":
            self._symlink(parts, h)
        elif t == b"1":
            self._hardlink(parts, h)
        elif t in (b"3", b"4", b"6"):
            self._node(parts, h, t)
        elif t in (b"S", b"M"):
            raise LayerError(f"unsupported tar entry type {t.decode()} for {show(name)}")
        # Other types (volume labels, GNU dumpdirs, unknown) carry nothing to write.

    def _new(self, parts: list[bytes], name: bytes, is_dir: bool) -> tuple[bytes, bytes, bool]:
        prel = self._parent(parts, name)
        rel = prel + b"/" + parts[-1] if prel else parts[-1]
        was_whiteout = self.seen.get(rel) == _WHITEOUT
        kept = self._clear(rel, is_dir)
        # A directory replacing this layer's own whiteout: lower contents stay hidden.
        self._pending_opaque = was_whiteout and is_dir
        return rel, self._abs(rel), kept

    def _file(self, parts: list[bytes], h: Header, stream: TarStream) -> None:
        rel, path, _ = self._new(parts, h.name, False)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            if h.size:
                stream.copy_to(fd, h.size)
            os.fchown(fd, h.uid, h.gid)
            os.fchmod(fd, h.mode & 0o7777)
            if h.xattrs:
                self._xattrs(fd, h)
            os.utime(fd, ns=self._times(h))
        finally:
            os.close(fd)
        self.seen[rel] = _S_IFREG
        self.unpacked += h.size

    def _dir_meta(self, rel: bytes, path: bytes, h: Header) -> None:
        os.chown(path, h.uid, h.gid, follow_symlinks=False)
        os.chmod(path, h.mode & 0o7777)
        if h.xattrs:
            self._xattrs(path, h, follow=False)
        self.dir_times.append((rel, *self._times(h)))

    def _dir(self, parts: list[bytes], h: Header) -> None:
        rel, path, kept = self._new(parts, h.name, True)
        if not kept:
            os.mkdir(path, 0o700)
        self.seen[rel] = _S_IFDIR
        self.dirs.add(rel)
        if self._pending_opaque:
            self._set_opaque(path)
        self._dir_meta(rel, path, h)

    def _symlink(self, parts: list[bytes], h: Header) -> None:
        rel, path, _ = self._new(parts, h.name, False)
        os.symlink(h.linkname, path)
        self.seen[rel] = _S_IFLNK
        os.chown(path, h.uid, h.gid, follow_symlinks=False)
        if h.xattrs:
            self._xattrs(path, h, follow=False)
        os.utime(path, ns=self._times(h), follow_symlinks=False)

    def _hardlink(self, parts: list[bytes], h: Header) -> None:
        tparts = _clean(h.linkname, "hardlink")
        if not tparts:
            raise LayerError(f"refusing hardlink {show(h.name)}: it points at the layer root")
        trel_parent = self._parent(tparts, h.linkname, create=False)
        trel = (trel_parent + b"/" + tparts[-1] if trel_parent else tparts[-1]) if trel_parent is not None else None
        if trel is None:
            raise LayerError(f"refusing hardlink {show(h.name)}: target {show(h.linkname)} "
                             "is not in the layer")
        tkind = self.seen.get(trel)
        if tkind == _WHITEOUT or tkind == _S_IFDIR or (self.overlay and tkind is None):
            raise LayerError(f"refusing hardlink {show(h.name)}: target {show(h.linkname)} "
                             "is not a file in the layer")
        tpath = self._abs(trel)
        if tkind is None:
            try:
                st = os.lstat(tpath)
            except FileNotFoundError:
                raise LayerError(f"refusing hardlink {show(h.name)}: target {show(h.linkname)} "
                                 "does not exist") from None
            if stat.S_ISDIR(st.st_mode):
                raise LayerError(f"refusing hardlink {show(h.name)}: target {show(h.linkname)} is a directory")
            tkind = stat.S_IFMT(st.st_mode)
        prel = self._parent(parts, h.name)
        rel = prel + b"/" + parts[-1] if prel else parts[-1]
        if rel == trel:
            return
        self._clear(rel, False)
        os.link(tpath, self._abs(rel), follow_symlinks=False)
        self.seen[rel] = tkind

    def _node(self, parts: list[bytes], h: Header, t: bytes) -> None:
        rel, path, _ = self._new(parts, h.name, False)
        if t == b"6":
            os.mknod(path, stat.S_IFIFO | 0o600)
            kind = stat.S_IFIFO
        else:
            kind = stat.S_IFCHR if t == b"3" else stat.S_IFBLK
            os.mknod(path, kind | 0o600, os.makedev(h.devmajor, h.devminor))
        self.seen[rel] = kind
        os.chown(path, h.uid, h.gid, follow_symlinks=False)
        os.chmod(path, h.mode & 0o7777)  # a node we just made, in a real directory
        if h.xattrs:
            self._xattrs(path, h, follow=False)
        os.utime(path, ns=self._times(h), follow_symlinks=False)

    def _whiteout(self, parts: list[bytes], name: bytes) -> None:
        base = parts[-1]
        if base == WHITEOUT_OPAQUE:
            self._opaque(parts, name)
            return
        if base.startswith(WHITEOUT_META_PREFIX):
            return  # aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): nothing to apply
        target = base[len(WHITEOUT_PREFIX):]
        if not target or target in (b".", b".."):
            raise LayerError(f"refusing whiteout {show(name)}: no valid name")
        tparts = parts[:-1] + [target]
        if self.overlay:
            prel = self._parent(tparts, name)
            rel = prel + b"/" + target if prel else target
            kind = self.seen.get(rel)
            if kind is None:
                os.mknod(self._abs(rel), stat.S_IFCHR, 0)
                self.seen[rel] = _WHITEOUT
            elif kind == _S_IFDIR:
                # Made by this layer too: it stays, but what lower layers had there goes.
                self._set_opaque(self._abs(rel))
            return
        prel = self._parent(tparts, name, create=False)
        if prel is None:
            return
        rel = prel + b"/" + target if prel else target
        kind = self.seen.get(rel)
        if kind is not None:
            if kind == _S_IFDIR:
                self._remove_lower(rel)
            return
        path = self._abs(rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            remove_tree(os.fsdecode(path))
        else:
            os.unlink(path)
        self._forget(rel)

    def _opaque(self, parts: list[bytes], name: bytes) -> None:
        if self.overlay:
            prel = self._parent(parts, name)
            assert prel is not None
            self._set_opaque(self._abs(prel))
            return
        prel = self._parent(parts, name, create=False)
        if prel is None:
            return
        self._remove_lower(prel)

    def _remove_lower(self, rel: bytes) -> None:
        """flat mode: delete what earlier layers left inside directory rel."""
        path = self._abs(rel)
        for entry in os.scandir(path):
            crel = rel + b"/" + os.fsencode(entry.name) if rel else os.fsencode(entry.name)
            kind = self.seen.get(crel)
            if kind is None:
                if entry.is_dir(follow_symlinks=False):
                    remove_tree(entry.path)
                else:
                    os.unlink(entry.path)
                self._forget(crel)
            elif kind == _S_IFDIR:
                self._remove_lower(crel)

    def finish(self) -> None:
        for rel, atime, mtime in self.dir_times:
            try:
                os.utime(self._abs(rel), ns=(atime, mtime), follow_symlinks=False)
            except FileNotFoundError:
                pass


def _open_source(src: object) -> tuple[BinaryIO | int, bool]:
    if isinstance(src, (str, bytes, os.PathLike)):
        return open(src, "rb", buffering=0), True  # type: ignore[return-value]
    if isinstance(src, int):
        return src, False
    return src, False  # type: ignore[return-value]


def apply(src: object, dest_dir: str, media_type: str | None = None, *, mode: str = "overlay",
          expected_digest: str | None = None, expected_diff_id: str | None = None,
          tee: object | None = None) -> ApplyResult:
    """Unpack the layer ``src`` (a path, a binary file object or an fd) into ``dest_dir``.

    mode "overlay": dest_dir must be empty (it is created if missing); whiteouts become
    overlayfs whiteouts. mode "flat": applied onto what dest_dir holds. The compression is
    sniffed from the data (the media type cannot override what the bytes are). When given,
    ``expected_digest`` (of the blob as read) and ``expected_diff_id`` are verified after
    the whole stream was read; ``tee`` (anything with ``write``) receives the raw bytes.
    Raises LayerError with a one-line message; dest_dir may then hold a partial layer,
    which the caller removes (snapshots unpack into a temporary directory for that).
    """
    if mode not in ("overlay", "flat"):
        raise ValueError(f"unknown apply mode {mode!r}")
    overlay = mode == "overlay"
    os.makedirs(dest_dir, mode=0o755, exist_ok=True)
    if overlay and os.listdir(dest_dir):
        raise LayerError(f"overlay apply needs an empty directory: {dest_dir}")
    algorithm = "sha256"
    if expected_digest:
        algorithm = expected_digest.split(":", 1)[0]
        if algorithm not in ("sha256", "sha512"):
            raise LayerError(f"unsupported digest algorithm in {expected_digest}")
    f, close = _open_source(src)
    prefetch = None
    try:
        raw = BlobReader(f, algorithm, tee)
        kind, chunks = uncompressed_chunks(raw)
        hashed = Hashed(chunks)

        def rest() -> Iterator[bytes]:
            yield from hashed
            raw.drain()  # whatever follows the compressed stream still counts for the digest

        prefetch = _Prefetch(rest())
        stream = TarStream(prefetch)
        app = _Applier(dest_dir, overlay)
        try:
            for h in iter_headers(stream):
                app.entry(h, stream)
            stream.drain()
        except LayerError:
            raise
        except OSError as e:
            raise LayerError(f"cannot apply layer: {_os_error(e)}") from None
        except (ValueError, UnicodeError) as e:
            raise LayerError(f"cannot apply layer: {e}") from None
        app.finish()
    finally:
        if prefetch is not None:
            prefetch.close()
        if close:
            f.close()  # type: ignore[union-attr]
    return _checked_result(hashed, raw, algorithm, kind, expected_digest, expected_diff_id, app.unpacked, app.entries)


def _checked_result(hashed: Any, raw: Any, algorithm: str, kind: str, expected_digest: str | None,
                    expected_diff_id: str | None, unpacked: int, entries: int) -> ApplyResult:
    """The layer's digests, held against what the caller expects."""
    diff_id = "sha256:" + hashed.hash.hexdigest()
    digest = f"{algorithm}:{raw.hash.hexdigest()}"
    if expected_digest and digest != expected_digest:
        raise LayerError(f"digest mismatch: expected {expected_digest}, got {digest} ({raw.size} bytes)")
    if expected_diff_id and diff_id != expected_diff_id:
        raise LayerError(f"diff_id mismatch: expected {expected_diff_id}, got {diff_id}")
    return ApplyResult(diff_id, hashed.size, digest=digest, compressed_size=raw.size, compression=kind,
                       unpacked_size=unpacked, entries=entries)


def _os_error(e: OSError) -> str:
    name = e.filename
    if isinstance(name, bytes):
        name = name.decode("utf-8", "backslashreplace")
    return f"{e.strerror or e}: {name}" if name else str(e.strerror or e)


def verify(src: object, media_type: str | None = None, *, expected_digest: str | None = None,
           expected_diff_id: str | None = None, tee: object | None = None) -> ApplyResult:
    """Like ``apply`` without writing anything: decompress, hash, check digests."""
    algorithm = expected_digest.split(":", 1)[0] if expected_digest else "sha256"
    f, close = _open_source(src)
    try:
        raw = BlobReader(f, algorithm, tee)
        kind, chunks = uncompressed_chunks(raw)
        hashed = Hashed(chunks)
        try:
            for _ in hashed:
                pass
            raw.drain()
        except LayerError:
            raise
        except (OSError, ValueError) as e:
            raise LayerError(f"cannot read layer: {e}") from None
    finally:
        if close:
            f.close()  # type: ignore[union-attr]
    return _checked_result(hashed, raw, algorithm, kind, expected_digest, expected_diff_id, 0, 0)
