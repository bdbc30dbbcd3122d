"""Reading a layer tar safely, without tarfile: ``TarStream`` gives exact reads over the
uncompressed chunks, ``iter_headers`` yields each member's header (ustar, GNU long names,
base-256 numbers, PAX and global PAX headers with times, xattrs from SCHILY and LIBARCHIVE)
with its data left in the stream. Malformed input raises LayerError; sparse files are refused."""
from __future__ import annotations

import base64
import os
from typing import Callable, Iterator
from urllib.parse import unquote_to_bytes

from .format import BLOCK, LayerError

_ZERO_BLOCK = bytes(BLOCK)
_MAX_EXTENDED_HEADER = 64 << 20    # a PAX or GNU long-name header is never this big


class TarStream:
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

    def skip_padding(self, size: int) -> None:
        """Skip the padding after ``size`` bytes of member data. The stream may end inside it,
        as Go's archive/tar allows (the docker CLI sends such a tar when it adds a Dockerfile
        from outside the context): the next header read then sees the end."""
        n = -size % BLOCK
        while n:
            if self.pos >= len(self.buf) and not self._next():
                return
            take = min(n, len(self.buf) - self.pos)
            self.pos += take
            n -= take

    def skip_member(self, size: int) -> None:
        """Skip a member's data (all of it must be there) and its padding."""
        self.skip(size)
        self.skip_padding(size)

    def drain(self) -> None:
        self.buf, self.pos = b"", 0
        while self._next():
            pass
        self.buf, self.pos = b"", 0


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


def cstr(field: bytes) -> bytes:
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


class Header:
    """One member: name and linkname as bytes, numbers as ints, times in nanoseconds."""

    __slots__ = ("name", "mode", "uid", "gid", "size", "mtime_ns", "atime_ns", "type", "linkname",
                 "devmajor", "devminor", "xattrs")

    def __init__(self) -> None:
        self.xattrs: dict[str, bytes] = {}
        self.atime_ns: int | None = None


def _header_from_block(block: bytes) -> Header:
    chksum = _num(block[148:156])
    unsigned = sum(block) - sum(block[148:156]) + 8 * 32
    if chksum != unsigned:
        high = sum(1 for b in block[:148] if b > 127) + sum(1 for b in block[156:] if b > 127)
        if chksum != unsigned - 256 * high:  # some old tars summed signed chars
            raise LayerError("invalid tar header checksum (not a tar archive, or corrupt)")
    h = Header()
    magic = block[257:265]
    name = cstr(block[0:100])
    if magic[:6] == b"ustar\0":
        prefix = cstr(block[345:500])
        if prefix:
            name = prefix + b"/" + name
    h.name = name
    h.mode = _num(block[100:108])
    h.uid = _num(block[108:116])
    h.gid = _num(block[116:124])
    h.size = _num(block[124:136])
    h.mtime_ns = _num(block[136:148]) * 1_000_000_000
    h.type = block[156:157] or b"\0"
    h.linkname = cstr(block[157:257])
    if magic[:5] == b"ustar":
        h.devmajor = _num(block[329:337])
        h.devminor = _num(block[337:345])
    else:
        h.devmajor = h.devminor = 0
    return h


# PAX keys that replace a header field: (field, how the value is read)
_PAX_FIELDS: dict[bytes, tuple[str, Callable[[bytes], object]]] = {
    b"path": ("name", bytes), b"linkpath": ("linkname", bytes),
    b"size": ("size", int), b"uid": ("uid", int), b"gid": ("gid", int),
    b"mtime": ("mtime_ns", _pax_time_ns), b"atime": ("atime_ns", _pax_time_ns),
    b"SCHILY.devmajor": ("devmajor", int), b"SCHILY.devminor": ("devminor", int),
}


def _apply_pax(h: Header, pax: dict[bytes, bytes]) -> None:
    for key, value in pax.items():
        known = _PAX_FIELDS.get(key)
        if known is not None:
            setattr(h, known[0], known[1](value))
        elif key.startswith(b"SCHILY.xattr."):
            h.xattrs[key[13:].decode("utf-8", "surrogateescape")] = value
        elif key.startswith(b"LIBARCHIVE.xattr."):
            name = unquote_to_bytes(key[17:]).decode("utf-8", "surrogateescape")
            try:
                h.xattrs.setdefault(name, base64.b64decode(value + b"=" * (-len(value) % 4)))
            except ValueError:
                raise LayerError(f"malformed LIBARCHIVE.xattr value for {name}") from None
        elif key.startswith(b"GNU.sparse."):
            raise LayerError("sparse files in layers are not supported")


def iter_headers(stream: TarStream) -> Iterator[Header]:
    """Yield each member's header; its data follows in ``stream`` (h.size bytes + padding)."""
    global_pax: dict[bytes, bytes] = {}
    pax: dict[bytes, bytes] | None = None
    long_name: bytes | None = None
    long_link: bytes | None = None
    while True:
        block = stream.read(BLOCK)
        if block is None or block == _ZERO_BLOCK:
            # End of archive: two zero blocks, one, or none (Go's archive/tar, and so dockerd,
            # takes the end of the stream at a header for the end); the rest is drained by
            # the caller.
            return
        h = _header_from_block(block)
        t = h.type
        if t in (b"x", b"g", b"L", b"K"):
            if h.size > _MAX_EXTENDED_HEADER:
                raise LayerError("tar extended header is too large")
            data = stream.read_exact(h.size)
            stream.skip_padding(h.size)
            if t == b"x":
                pax = _parse_pax(data)
            elif t == b"g":
                global_pax.update(_parse_pax(data))
            elif t == b"L":
                long_name = cstr(data)
            else:
                long_link = cstr(data)
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
