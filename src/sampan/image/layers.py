"""Layer tarballs: ``apply`` (tar, gzip, zstd; OCI whiteouts) and ``diff`` (upper dir -> tar).

``apply`` parses the tar itself (tarfile is used nowhere here) and makes every change with
plain ``os`` calls that never follow a symlink: names are cleaned lexically, ``..`` that
climbs out is refused, absolute names are taken relative to the layer root, and a parent
directory must be a real directory (a symlink created by the same layer is refused; in
flat mode a non-directory left by an earlier layer is replaced by a directory, which is
what the overlay view of the same layers shows). Hardlinks must point at something
already unpacked inside the root. The diff_id (sha256 of the uncompressed tar) and the
compressed digest are computed while streaming, in one pass.

Two modes: ``overlay`` unpacks one layer into its own empty directory and stores
whiteouts the way overlayfs reads them (a 0/0 character device, ``trusted.overlay.opaque``);
``flat`` applies onto an existing tree and deletes what the whiteouts name.
Each call is independent: callers run several in threads (zlib, zstd, sha256 and file
writes all release the GIL).
"""
from __future__ import annotations

import bz2
import errno
import hashlib
import lzma
import os
import queue
import stat
import threading
import zlib
from typing import Any, BinaryIO, Callable, Iterator

from .. import errors
from ..runtime.fsutil import remove_tree

try:  # ISA-L inflates gzip more than twice as fast as zlib (and releases the GIL too)
    from isal import isal_zlib as _inflate_mod
except ImportError:  # pragma: no cover - optional speed-up
    _inflate_mod = zlib

__all__ = [
    "LayerError", "ApplyResult", "DiffResult", "apply", "diff", "verify", "detect_compression",
    "compression_of_media_type", "MEDIA_TYPE_TAR", "MEDIA_TYPE_GZIP", "MEDIA_TYPE_ZSTD",
    "DOCKER_LAYER", "DOCKER_FOREIGN_LAYER",
]

MEDIA_TYPE_TAR = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TYPE_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_TYPE_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

WHITEOUT_PREFIX = b".wh."
WHITEOUT_META_PREFIX = b".wh..wh."
WHITEOUT_OPAQUE = b".wh..wh..opq"
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"

_IN_CHUNK = 1 << 20       # compressed bytes read at a time
_OUT_CHUNK = 1 << 20      # most uncompressed bytes produced per decompressor call
_BLOCK = 512


class LayerError(errors.Invalid):
    """A layer cannot be applied: corrupt, truncated, wrong digest, or unsafe. One line."""


# ----------------------------------------------------------------------------- results

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


class DiffResult(str):
    """The diff_id (a str) with ``size`` (uncompressed tar bytes), and ``digest`` and
    ``compressed_size`` of what was written to the output (equal to diff_id/size when
    uncompressed)."""

    size: int
    digest: str
    compressed_size: int
    media_type: str


# ----------------------------------------------------------------------------- input side

def compression_of_media_type(media_type: str | None) -> str | None:
    """'gzip', 'zstd', 'none', or None when the media type does not say (then sniff)."""
    if not media_type:
        return None
    mt = media_type.lower()
    if mt.endswith("+gzip") or mt.endswith(".tar.gzip") or mt.endswith("gzip"):
        return "gzip"
    if mt.endswith("+zstd") or mt.endswith("zstd"):
        return "zstd"
    if mt.endswith(".tar") or mt.endswith("layer.v1.tar"):
        return "none"
    return None


def detect_compression(head: bytes) -> str:
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if head[:3] == b"BZh" and len(head) >= 10 and head[4:10] == b"\x31\x41\x59\x26\x53\x59":
        return "bzip2"
    return "none"


class _Raw:
    """Reads the blob as stored, hashing it (compressed digest), counting it, teeing it."""

    def __init__(self, src: BinaryIO | int, algorithm: str, tee: object | None) -> None:
        self.src = src
        self.hash = hashlib.new(algorithm)
        self.size = 0
        self.tee = tee
        self.pushback = b""
        if isinstance(src, int):
            self._read: Callable[[int], bytes] = lambda n: os.read(src, n)
        else:
            self._read = src.read

    def read(self, n: int = _IN_CHUNK) -> bytes:
        if self.pushback:
            data, self.pushback = self.pushback, b""
            return data
        data = self._read(n)
        if data:
            self.hash.update(data)
            self.size += len(data)
            if self.tee is not None:
                self.tee.write(data)
        return data

    def peek(self, n: int) -> bytes:
        """At least n bytes (fewer only at EOF) without consuming them."""
        buf = self.pushback
        self.pushback = b""
        while len(buf) < n:
            more = self.read(max(n, _IN_CHUNK))
            if not more:
                break
            buf += more
        self.pushback = buf
        return buf

    def drain(self) -> None:
        while self.read():
            pass


def _chunks_plain(raw: _Raw) -> Iterator[bytes]:
    while True:
        data = raw.read()
        if not data:
            return
        yield data


def _chunks_zlib_like(raw: _Raw, kind: str) -> Iterator[bytes]:
    """gzip (multi-member), xz (multi-stream) and bzip2, with bounded output per call."""
    def new() -> object:
        if kind == "gzip":
            return _inflate_mod.decompressobj(31)
        if kind == "xz":
            return lzma.LZMADecompressor()
        return bz2.BZ2Decompressor()

    magic = {"gzip": b"\x1f\x8b", "xz": b"\xfd7zXZ\x00", "bzip2": b"BZh"}[kind]
    errors: tuple[type[BaseException], ...] = (zlib.error, _inflate_mod.error, lzma.LZMAError, OSError, EOFError,
                                               ValueError)
    dec = new()
    data = b""
    while True:
        if kind == "gzip":
            if not data:
                data = raw.read()
                if not data:
                    if not dec.eof:  # type: ignore[attr-defined]
                        raise LayerError("unexpected end of gzip stream (truncated layer)")
                    return
            try:
                out = dec.decompress(data, _OUT_CHUNK)  # type: ignore[attr-defined]
            except errors as e:
                raise LayerError(f"corrupt gzip stream: {e}") from None
            data = dec.unconsumed_tail  # type: ignore[attr-defined]
        else:
            if dec.needs_input:  # type: ignore[attr-defined]
                data = raw.read()
                if not data:
                    if not dec.eof:  # type: ignore[attr-defined]
                        raise LayerError(f"unexpected end of {kind} stream (truncated layer)")
                    return
            else:
                data = b""
            try:
                out = dec.decompress(data, _OUT_CHUNK)  # type: ignore[attr-defined]
            except errors as e:
                raise LayerError(f"corrupt {kind} stream: {e}") from None
            data = b""
        if out:
            yield out
        if dec.eof:  # type: ignore[attr-defined]
            rest = dec.unused_data + data  # type: ignore[attr-defined]
            # Another member/stream may follow; trailing zero padding is tolerated.
            while len(rest) < len(magic):
                more = raw.read()
                if not more:
                    break
                rest += more
            if not rest:
                return
            if rest.startswith(magic):
                dec = new()
                if kind == "gzip":
                    data = rest
                else:
                    raw.pushback = rest
                    data = b""
                continue
            while rest:
                if rest.strip(b"\0"):
                    raise LayerError(f"trailing garbage after {kind} stream")
                rest = raw.read()
            return


def _chunks_zstd(raw: _Raw) -> Iterator[bytes]:
    try:
        import zstandard
    except ImportError:  # pragma: no cover - a declared dependency
        raise LayerError("zstd layers need the 'zstandard' Python package") from None
    reader = zstandard.ZstdDecompressor().stream_reader(raw, read_size=_IN_CHUNK, read_across_frames=True,
                                                        closefd=False)
    while True:
        try:
            out = reader.read(_OUT_CHUNK)
        except zstandard.ZstdError as e:
            raise LayerError(f"corrupt zstd stream: {e}") from None
        if not out:
            return
        yield out


def _uncompressed_chunks(raw: _Raw) -> tuple[str, Iterator[bytes]]:
    kind = detect_compression(raw.peek(10))
    if kind == "none":
        return kind, _chunks_plain(raw)
    if kind == "zstd":
        return kind, _chunks_zstd(raw)
    return kind, _chunks_zlib_like(raw, kind)


class _Hashed:
    """Iterates the uncompressed chunks, hashing (diff_id) and counting them."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.hash = hashlib.sha256()
        self.size = 0

    def __iter__(self) -> Iterator[bytes]:
        h = self.hash
        for chunk in self.chunks:
            if chunk:
                h.update(chunk)
                self.size += len(chunk)
                yield chunk


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


class _Stream:
    """The uncompressed tar as a byte stream with exact reads."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = iter(chunks)
        self.buf = b""
        self.pos = 0

    def _next(self) -> bool:
        for chunk in self._chunks:
            self.buf = chunk
            self.pos = 0
            return True
        return False

    def read(self, n: int) -> bytes | None:
        """Exactly n bytes; None at a clean end (nothing at all left)."""
        buf, pos = self.buf, self.pos
        if len(buf) - pos >= n:
            self.pos = pos + n
            return buf[pos:pos + n]
        parts = [buf[pos:]]
        have = len(buf) - pos
        self.buf, self.pos = b"", 0
        while have < n:
            if not self._next():
                if have == 0:
                    return None
                raise LayerError("unexpected end of tar stream (truncated layer)")
            take = min(n - have, len(self.buf))
            parts.append(self.buf[:take])
            self.pos = take
            have += take
        return b"".join(parts)

    def read_exact(self, n: int) -> bytes:
        data = self.read(n)
        if data is None:
            raise LayerError("unexpected end of tar stream (truncated layer)")
        return data

    def copy_to(self, fd: int, n: int) -> None:
        while n:
            if self.pos >= len(self.buf) and not self._next():
                raise LayerError("unexpected end of tar stream (truncated layer)")
            take = min(n, len(self.buf) - self.pos)
            view = memoryview(self.buf)[self.pos:self.pos + take]
            while view:
                done = os.write(fd, view)
                view = view[done:]
            self.pos += take
            n -= take

    def skip(self, n: int) -> None:
        while n:
            if self.pos >= len(self.buf) and not self._next():
                raise LayerError("unexpected end of tar stream (truncated layer)")
            take = min(n, len(self.buf) - self.pos)
            self.pos += take
            n -= take

    def drain(self) -> None:
        self.buf, self.pos = b"", 0
        while self._next():
            pass
        self.buf, self.pos = b"", 0


# ----------------------------------------------------------------------------- tar headers

REGTYPES = (b"0", b"\0", b"7")
_ZERO_BLOCK = bytes(_BLOCK)


def _num(field: bytes) -> int:
    if field and field[0] & 0x80:  # GNU base-256
        if field[0] == 0xFF:
            return int.from_bytes(field, "big", signed=True)
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    s = field.split(b"\0", 1)[0].strip(b" ")
    if not s:
        return 0
    try:
        return int(s, 8)
    except ValueError:
        raise LayerError(f"invalid number {field!r} in tar header") from None


def _cstr(field: bytes) -> bytes:
    i = field.find(b"\0")
    return field if i < 0 else field[:i]


def _pax_time_ns(value: bytes) -> int:
    s = value.decode("ascii", "replace").strip()
    neg = s.startswith("-")
    if neg:
        s = s[1:]
    sec, _, frac = s.partition(".")
    try:
        ns = int(sec or "0") * 1_000_000_000 + int((frac + "000000000")[:9] or "0")
    except ValueError:
        raise LayerError(f"invalid time {value!r} in tar PAX header") from None
    return -ns if neg else ns


def _parse_pax(data: bytes) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    pos = 0
    n = len(data)
    while pos < n:
        if data[pos] == 0:  # NUL padding at the end
            break
        sp = data.find(b" ", pos)
        if sp < 0:
            raise LayerError("malformed PAX header")
        try:
            length = int(data[pos:sp])
        except ValueError:
            raise LayerError("malformed PAX header") from None
        end = pos + length
        if length <= 0 or end > n or data[end - 1:end] != b"\n":
            raise LayerError("malformed PAX header")
        key, eq, value = data[sp + 1:end - 1].partition(b"=")
        if not eq:
            raise LayerError("malformed PAX header")
        out[key] = value
        pos = end
    return out


class _Header:
    __slots__ = ("name", "mode", "uid", "gid", "size", "mtime_ns", "atime_ns", "type", "linkname",
                 "devmajor", "devminor", "xattrs")

    def __init__(self) -> None:
        self.xattrs: dict[str, bytes] = {}
        self.atime_ns: int | None = None


def _header_from_block(block: bytes) -> _Header:
    chksum = _num(block[148:156])
    unsigned = sum(block) - sum(block[148:156]) + 8 * 32
    if chksum != unsigned:
        high = sum(1 for b in block[:148] if b > 127) + sum(1 for b in block[156:] if b > 127)
        if chksum != unsigned - 256 * high:  # some old tars summed signed chars
            raise LayerError("invalid tar header checksum (not a tar archive, or corrupt)")
    h = _Header()
    magic = block[257:265]
    name = _cstr(block[0:100])
    if magic[:6] == b"ustar\0":
        prefix = _cstr(block[345:500])
        if prefix:
            name = prefix + b"/" + name
    h.name = name
    h.mode = _num(block[100:108])
    h.uid = _num(block[108:116])
    h.gid = _num(block[116:124])
    h.size = _num(block[124:136])
    h.mtime_ns = _num(block[136:148]) * 1_000_000_000
    h.type = block[156:157] or b"\0"
    h.linkname = _cstr(block[157:257])
    if magic[:5] == b"ustar":
        h.devmajor = _num(block[329:337])
        h.devminor = _num(block[337:345])
    else:
        h.devmajor = h.devminor = 0
    return h


def _apply_pax(h: _Header, pax: dict[bytes, bytes]) -> None:
    for key, value in pax.items():
        if key == b"path":
            h.name = value
        elif key == b"linkpath":
            h.linkname = value
        elif key == b"size":
            h.size = int(value)
        elif key == b"uid":
            h.uid = int(value)
        elif key == b"gid":
            h.gid = int(value)
        elif key == b"mtime":
            h.mtime_ns = _pax_time_ns(value)
        elif key == b"atime":
            h.atime_ns = _pax_time_ns(value)
        elif key == b"SCHILY.devmajor":
            h.devmajor = int(value)
        elif key == b"SCHILY.devminor":
            h.devminor = int(value)
        elif key.startswith(b"SCHILY.xattr."):
            h.xattrs[key[13:].decode("utf-8", "surrogateescape")] = value
        elif key.startswith(b"LIBARCHIVE.xattr."):
            import base64
            from urllib.parse import unquote_to_bytes
            name = unquote_to_bytes(key[17:]).decode("utf-8", "surrogateescape")
            try:
                h.xattrs.setdefault(name, base64.b64decode(value + b"=" * (-len(value) % 4)))
            except ValueError:
                raise LayerError(f"malformed LIBARCHIVE.xattr value for {name}") from None
        elif key.startswith(b"GNU.sparse."):
            raise LayerError("sparse files in layers are not supported")


def _iter_headers(stream: _Stream) -> Iterator[_Header]:
    """Yield each member's header; its data follows in ``stream`` (h.size bytes + padding)."""
    global_pax: dict[bytes, bytes] = {}
    pax: dict[bytes, bytes] | None = None
    long_name: bytes | None = None
    long_link: bytes | None = None
    while True:
        block = stream.read(_BLOCK)
        if block is None:
            raise LayerError("unexpected end of tar stream (no end-of-archive marker)")
        if block == _ZERO_BLOCK:
            # End of archive: one (tolerated) or two zero blocks; the rest is drained by the caller.
            return
        h = _header_from_block(block)
        t = h.type
        if t in (b"x", b"g", b"L", b"K"):
            if h.size > (64 << 20):
                raise LayerError("tar extended header is too large")
            data = stream.read_exact(h.size)
            stream.skip(-h.size % _BLOCK)
            if t == b"x":
                pax = _parse_pax(data)
            elif t == b"g":
                global_pax.update(_parse_pax(data))
            elif t == b"L":
                long_name = _cstr(data)
            else:
                long_link = _cstr(data)
            continue
        if global_pax:
            _apply_pax(h, {k: v for k, v in global_pax.items() if k not in (b"path", b"linkpath", b"size")})
        if long_name is not None:
            h.name = long_name
        if long_link is not None:
            h.linkname = long_link
        if pax:
            _apply_pax(h, pax)
        pax = long_name = long_link = None
        if h.size < 0:
            raise LayerError("negative size in tar header")
        yield h


# ----------------------------------------------------------------------------- applying

def _clean(name: bytes, what: str = "entry") -> list[bytes]:
    parts: list[bytes] = []
    for comp in name.split(b"/"):
        if comp in (b"", b"."):
            continue
        if comp == b"..":
            if not parts:
                raise LayerError(f"refusing {what} {_show(name)}: path escapes the layer root")
            parts.pop()
        else:
            parts.append(comp)
    return parts


def _show(name: bytes) -> str:
    return repr(name.decode("utf-8", "backslashreplace"))


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
                    raise LayerError(f"refusing entry {_show(name)}: its parent "
                                     f"{_show(rel)} is a symlink in the same layer")
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
                raise LayerError(f"refusing entry {_show(name)}: its parent {_show(rel)} is not a directory")
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
    def _xattrs(self, target: bytes | int, h: _Header, follow: bool = True) -> None:
        for key, value in h.xattrs.items():
            if key.startswith("trusted.overlay.") or key.startswith("user.overlay."):
                continue  # never let an archive steer overlayfs
            try:
                if isinstance(target, int):
                    os.setxattr(target, key, value)
                else:
                    os.setxattr(target, key, value, follow_symlinks=follow)
            except OSError as e:
                if e.errno in _IGNORED_XATTR_ERRNOS:
                    continue
                raise LayerError(f"cannot set xattr {key} on {_show(h.name)}: {e.strerror}") from None

    @staticmethod
    def _times(h: _Header) -> tuple[int, int]:
        mt = h.mtime_ns
        return (h.atime_ns if h.atime_ns is not None else mt, mt)

    def _set_opaque(self, path: bytes) -> None:
        os.setxattr(path, OVERLAY_OPAQUE_XATTR, b"y", follow_symlinks=False)

    # -- entries
    def entry(self, h: _Header, stream: _Stream) -> None:
        self.entries += 1
        t = h.type
        name = h.name
        if t in REGTYPES and name.endswith(b"/"):
            t = b"5"  # old tars mark directories by a trailing slash
        parts = _clean(name)
        base = parts[-1] if parts else b""
        if base.startswith(WHITEOUT_PREFIX):
            stream.skip(h.size + (-h.size % _BLOCK))
            self._whiteout(parts, name)
            return
        if not parts:  # the layer root itself: keep it, take its metadata
            if t == b"5":
                self._dir_meta(b"", self.root, h)
            stream.skip(h.size + (-h.size % _BLOCK))
            return
        if t in REGTYPES:
            self._file(parts, h, stream)
            stream.skip(-h.size % _BLOCK)
            return
        stream.skip(h.size + (-h.size % _BLOCK))  # non-files carry no data worth keeping
        if t == b"5":
            self._dir(parts, h)
        elif t == b"2":
            self._symlink(parts, h)
        elif t == b"1":
            self._hardlink(parts, h)
        elif t in (b"3", b"4", b"6"):
            self._node(parts, h, t)
        elif t in (b"S", b"M"):
            raise LayerError(f"unsupported tar entry type {t.decode()} for {_show(name)}")
        # Other types (volume labels, GNU dumpdirs, unknown) carry nothing to write.

    def _new(self, parts: list[bytes], name: bytes, is_dir: bool) -> tuple[bytes, bytes, bool]:
        prel = self._parent(parts, name)
        rel = prel + b"/" + parts[-1] if prel else parts[-1]
        was_whiteout = self.seen.get(rel) == _WHITEOUT
        kept = self._clear(rel, is_dir)
        # A directory replacing this layer's own whiteout: lower contents stay hidden.
        self._pending_opaque = was_whiteout and is_dir
        return rel, self._abs(rel), kept

    def _file(self, parts: list[bytes], h: _Header, stream: _Stream) -> None:
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

    def _dir_meta(self, rel: bytes, path: bytes, h: _Header) -> None:
        os.chown(path, h.uid, h.gid, follow_symlinks=False)
        os.chmod(path, h.mode & 0o7777)
        if h.xattrs:
            self._xattrs(path, h, follow=False)
        self.dir_times.append((rel, *self._times(h)))

    def _dir(self, parts: list[bytes], h: _Header) -> None:
        rel, path, kept = self._new(parts, h.name, True)
        if not kept:
            os.mkdir(path, 0o700)
        self.seen[rel] = _S_IFDIR
        self.dirs.add(rel)
        if self._pending_opaque:
            self._set_opaque(path)
        self._dir_meta(rel, path, h)

    def _symlink(self, parts: list[bytes], h: _Header) -> None:
        rel, path, _ = self._new(parts, h.name, False)
        os.symlink(h.linkname, path)
        self.seen[rel] = _S_IFLNK
        os.chown(path, h.uid, h.gid, follow_symlinks=False)
        if h.xattrs:
            self._xattrs(path, h, follow=False)
        os.utime(path, ns=self._times(h), follow_symlinks=False)

    def _hardlink(self, parts: list[bytes], h: _Header) -> None:
        tparts = _clean(h.linkname, "hardlink")
        if not tparts:
            raise LayerError(f"refusing hardlink {_show(h.name)}: it points at the layer root")
        trel_parent = self._parent(tparts, h.linkname, create=False)
        trel = (trel_parent + b"/" + tparts[-1] if trel_parent else tparts[-1]) if trel_parent is not None else None
        if trel is None:
            raise LayerError(f"refusing hardlink {_show(h.name)}: target {_show(h.linkname)} "
                             "is not in the layer")
        tkind = self.seen.get(trel)
        if tkind == _WHITEOUT or tkind == _S_IFDIR or (self.overlay and tkind is None):
            raise LayerError(f"refusing hardlink {_show(h.name)}: target {_show(h.linkname)} "
                             "is not a file in the layer")
        tpath = self._abs(trel)
        if tkind is None:
            try:
                st = os.lstat(tpath)
            except FileNotFoundError:
                raise LayerError(f"refusing hardlink {_show(h.name)}: target {_show(h.linkname)} "
                                 "does not exist") from None
            if stat.S_ISDIR(st.st_mode):
                raise LayerError(f"refusing hardlink {_show(h.name)}: target {_show(h.linkname)} is a directory")
            tkind = stat.S_IFMT(st.st_mode)
        prel = self._parent(parts, h.name)
        rel = prel + b"/" + parts[-1] if prel else parts[-1]
        if rel == trel:
            return
        self._clear(rel, False)
        os.link(tpath, self._abs(rel), follow_symlinks=False)
        self.seen[rel] = tkind

    def _node(self, parts: list[bytes], h: _Header, t: bytes) -> None:
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
            raise LayerError(f"refusing whiteout {_show(name)}: no valid name")
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
        raw = _Raw(f, algorithm, tee)
        kind, chunks = _uncompressed_chunks(raw)
        hashed = _Hashed(chunks)

        def rest() -> Iterator[bytes]:
            yield from hashed
            raw.drain()  # whatever follows the compressed stream still counts for the digest

        prefetch = _Prefetch(rest())
        stream = _Stream(prefetch)
        app = _Applier(dest_dir, overlay)
        try:
            for h in _iter_headers(stream):
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
        raw = _Raw(f, algorithm, tee)
        kind, chunks = _uncompressed_chunks(raw)
        hashed = _Hashed(chunks)
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


# ----------------------------------------------------------------------------- diff

class _Out:
    """The tar as written: hashed (diff_id), optionally compressed into ``out``."""

    def __init__(self, out: object, compression: str | None, level: int | None) -> None:
        self.out = out
        self.hash = hashlib.sha256()
        self.size = 0
        self.chash = hashlib.sha256()
        self.csize = 0
        self.compression = compression
        self._pending: list[bytes] = []
        self._pending_len = 0
        if compression == "gzip":
            self.comp = zlib.compressobj(6 if level is None else level, zlib.DEFLATED, 31)
        elif compression == "zstd":
            import zstandard
            self.comp = zstandard.ZstdCompressor(level=3 if level is None else level).compressobj()
        elif compression in (None, "none"):
            self.comp = None
        else:
            raise ValueError(f"unknown compression {compression!r}")

    def _emit(self, data: bytes) -> None:
        if data:
            self.chash.update(data)
            self.csize += len(data)
            self.out.write(data)  # type: ignore[attr-defined]

    def write(self, data: bytes | memoryview) -> None:
        self.hash.update(data)
        self.size += len(data)
        if self.comp is not None:
            self._emit(self.comp.compress(data))
        else:
            self._pending.append(bytes(data))
            self._pending_len += len(data)
            if self._pending_len >= _OUT_CHUNK:
                self._flush_pending()

    def _flush_pending(self) -> None:
        if self._pending:
            self._emit(b"".join(self._pending))
            self._pending = []
            self._pending_len = 0

    def close(self) -> None:
        self._flush_pending()
        if self.comp is not None:
            self._emit(self.comp.flush())


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def _fits(value: int, width: int) -> bool:
    return 0 <= value < 8 ** (width - 1)


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(str(n).encode()) + len(body) != n:
        n = len(str(n).encode()) + len(body)
    return str(n).encode() + body


def _tar_header(name: bytes, typeflag: bytes, *, size: int = 0, mode: int = 0, uid: int = 0, gid: int = 0,
                mtime: int = 0, linkname: bytes = b"", devmajor: int = 0, devminor: int = 0,
                xattrs: dict[str, bytes] | None = None) -> bytes:
    pax: list[bytes] = []
    if len(name) > 100 or not name.isascii():
        pax.append(_pax_record(b"path", name))
    if len(linkname) > 100 or not linkname.isascii():
        pax.append(_pax_record(b"linkpath", linkname))
    for key, value, width in ((b"uid", uid, 8), (b"gid", gid, 8), (b"size", size, 12), (b"mtime", mtime, 12)):
        if not _fits(value, width):
            pax.append(_pax_record(key, str(value).encode()))
    for key in sorted(xattrs or ()):
        pax.append(_pax_record(b"SCHILY.xattr." + key.encode("utf-8", "surrogateescape"), xattrs[key]))  # type: ignore[index]
    out = b""
    if pax:
        data = b"".join(pax)
        base = name.rstrip(b"/").rsplit(b"/", 1)[-1]
        pname = (b"PaxHeaders.0/" + base)[:100]
        out = _block(pname, b"x", len(data), 0o644, 0, 0, mtime if _fits(mtime, 12) else 0, b"", 0, 0)
        out += data + bytes(-len(data) % _BLOCK)
    out += _block(name[:100], typeflag, size if _fits(size, 12) else 0, mode,
                  uid if _fits(uid, 8) else 0, gid if _fits(gid, 8) else 0,
                  mtime if _fits(mtime, 12) else 0, linkname[:100], devmajor, devminor)
    return out


def _block(name: bytes, typeflag: bytes, size: int, mode: int, uid: int, gid: int, mtime: int,
           linkname: bytes, devmajor: int, devminor: int) -> bytes:
    parts = [
        name.ljust(100, b"\0"),
        _octal(mode & 0o7777, 8),
        _octal(uid, 8),
        _octal(gid, 8),
        _octal(size, 12),
        _octal(mtime, 12),
        b"        ",
        typeflag,
        linkname.ljust(100, b"\0"),
        b"ustar\x0000",
        bytes(32),  # uname
        bytes(32),  # gname
        _octal(devmajor, 8) if typeflag in (b"3", b"4") else bytes(8),
        _octal(devminor, 8) if typeflag in (b"3", b"4") else bytes(8),
        bytes(155),
        bytes(12),
    ]
    block = bytearray(b"".join(parts))
    assert len(block) == _BLOCK
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def _read_xattrs(path: bytes) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}
        raise
    out = {}
    for n in names:
        if n.startswith("trusted.overlay.") or n.startswith("user.overlay."):
            continue
        try:
            out[n] = os.getxattr(path, n, follow_symlinks=False)
        except OSError as e:
            if e.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
                continue
            raise
    return out


def _is_opaque(path: bytes) -> bool:
    try:
        return os.getxattr(path, OVERLAY_OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def diff(upper_dir: str, lower_dirs: list[str] | None, out_fileobj: object, *,
         compression: str | None = None, level: int | None = None) -> DiffResult:
    """Write the layer tar of an overlay upper dir to ``out_fileobj``; returns the diff_id.

    Overlay whiteouts (0/0 char devices) become ``.wh.NAME``, opaque directories get a
    ``.wh..wh..opq`` entry after their own; entries come in a fixed order (depth first,
    names sorted bytewise), times are whole seconds, owners numeric, hardlinks within the
    upper dir are kept. ``lower_dirs`` (top first) are consulted to leave out whiteouts
    that hide nothing. With ``compression`` ("gzip"/"zstd") the output is compressed; the
    result's ``digest`` is then the compressed blob's.
    """
    root = os.fsencode(os.path.abspath(upper_dir))
    lowers = [os.fsencode(os.path.abspath(d)) for d in (lower_dirs or [])]
    w = _Out(out_fileobj, compression, level)
    links: dict[tuple[int, int], bytes] = {}

    def hides_something(rel: bytes) -> bool:
        if not lowers:
            return True
        return any(os.path.lexists(lo + b"/" + rel) for lo in lowers)

    def walk(rel: bytes) -> None:
        path = root + b"/" + rel if rel else root
        names = sorted(os.listdir(path))
        for n in names:
            crel = rel + b"/" + n if rel else n
            cpath = root + b"/" + crel
            st = os.lstat(cpath)
            m = st.st_mode
            mtime = int(st.st_mtime)
            if stat.S_ISCHR(m) and st.st_rdev == 0:
                if hides_something(crel):
                    wname = (rel + b"/" if rel else b"") + WHITEOUT_PREFIX + n
                    w.write(_tar_header(wname, b"0", mode=0o600, uid=st.st_uid, gid=st.st_gid, mtime=mtime))
                continue
            if stat.S_ISSOCK(m):
                continue
            xattrs = _read_xattrs(cpath)
            common = dict(mode=stat.S_IMODE(m), uid=st.st_uid, gid=st.st_gid, mtime=mtime, xattrs=xattrs)
            if stat.S_ISDIR(m):
                w.write(_tar_header(crel + b"/", b"5", **common))  # type: ignore[arg-type]
                if _is_opaque(cpath):
                    w.write(_tar_header(crel + b"/" + WHITEOUT_OPAQUE, b"0", mode=stat.S_IMODE(m) & 0o777,
                                        uid=st.st_uid, gid=st.st_gid, mtime=mtime))
                walk(crel)
            elif stat.S_ISREG(m):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1:
                    first = links.get(key)
                    if first is not None:
                        w.write(_tar_header(crel, b"1", linkname=first, **common))  # type: ignore[arg-type]
                        continue
                    links[key] = crel
                w.write(_tar_header(crel, b"0", size=st.st_size, **common))  # type: ignore[arg-type]
                _copy_file(cpath, st.st_size, w)
            elif stat.S_ISLNK(m):
                w.write(_tar_header(crel, b"2", linkname=os.readlink(cpath), **common))  # type: ignore[arg-type]
            elif stat.S_ISCHR(m) or stat.S_ISBLK(m):
                t = b"3" if stat.S_ISCHR(m) else b"4"
                w.write(_tar_header(crel, t, devmajor=os.major(st.st_rdev), devminor=os.minor(st.st_rdev),
                                    **common))  # type: ignore[arg-type]
            elif stat.S_ISFIFO(m):
                w.write(_tar_header(crel, b"6", **common))  # type: ignore[arg-type]

    walk(b"")
    w.write(bytes(2 * _BLOCK))
    w.close()
    result = DiffResult("sha256:" + w.hash.hexdigest())
    result.size = w.size
    if w.comp is None:
        result.digest, result.compressed_size, result.media_type = str(result), w.size, MEDIA_TYPE_TAR
    else:
        result.digest = "sha256:" + w.chash.hexdigest()
        result.compressed_size = w.csize
        result.media_type = MEDIA_TYPE_GZIP if compression == "gzip" else MEDIA_TYPE_ZSTD
    return result


def _copy_file(path: bytes, size: int, w: _Out) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        left = size
        while left:
            chunk = os.read(fd, min(left, _OUT_CHUNK))
            if not chunk:
                raise LayerError(f"file {_show(path)} shrank while it was being read")
            w.write(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    if size % _BLOCK:
        w.write(bytes(_BLOCK - size % _BLOCK))
