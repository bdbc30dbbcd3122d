"""Compressed blobs and archives: what the bytes are (gzip, zstd, xz, bzip2, none, sniffed
from the magic, never taken from a media type), and their uncompressed bytes.

For layers, ``BlobReader`` reads the blob as stored (hashing it for the compressed digest,
teeing it into the content store) and ``uncompressed_chunks`` yields bounded chunks of the
tar (multi-member gzip, multi-frame zstd); ``Hashed`` hashes those for the diff_id. For
whole archives (``docker load`` of a compressed tar), ``decompressed`` gives a file object.
zlib, ISA-L, zstd, lzma, bz2 and sha256 all release the GIL: callers run several at once.
"""
from __future__ import annotations

import bz2
import hashlib
import io
import lzma
import os
import zlib
from typing import BinaryIO, Callable, Iterator

from .format import LayerError

try:  # ISA-L inflates gzip more than twice as fast as zlib (and releases the GIL too)
    from isal import isal_zlib as _inflate_mod
except ImportError:  # pragma: no cover - optional speed-up
    _inflate_mod = zlib

IN_CHUNK = 1 << 20        # compressed bytes read at a time
OUT_CHUNK = 1 << 20       # most uncompressed bytes produced per decompressor call
_SNIFF = 10               # bytes that tell every supported format apart

_MAGIC = {"gzip": b"\x1f\x8b", "zstd": b"\x28\xb5\x2f\xfd", "xz": b"\xfd7zXZ\x00", "bzip2": b"BZh"}


def detect_compression(head: bytes) -> str:
    """'gzip', 'zstd', 'xz', 'bzip2' or 'none', from the first 10 bytes."""
    if head[:2] == _MAGIC["gzip"]:
        return "gzip"
    if head[:4] == _MAGIC["zstd"]:
        return "zstd"
    if head[:6] == _MAGIC["xz"]:
        return "xz"
    if head[:3] == _MAGIC["bzip2"] and len(head) >= 10 and head[4:10] == b"\x31\x41\x59\x26\x53\x59":
        return "bzip2"
    return "none"


# ----------------------------------------------------------------------------- layer blobs

class BlobReader:
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

    def read(self, n: int = IN_CHUNK) -> bytes:
        if self.pushback:
            data, self.pushback = self.pushback, b""
            return data
        data = self._read(n)
        if data:
            self.hash.update(data)
            self.size += len(data)
            if self.tee is not None:
                self.tee.write(data)  # type: ignore[attr-defined]
        return data

    def peek(self, n: int) -> bytes:
        """At least n bytes (fewer only at EOF) without consuming them."""
        buf = self.pushback
        self.pushback = b""
        while len(buf) < n:
            more = self.read(max(n, IN_CHUNK))
            if not more:
                break
            buf += more
        self.pushback = buf
        return buf

    def drain(self) -> None:
        while self.read():
            pass


def _chunks_plain(raw: BlobReader) -> Iterator[bytes]:
    while True:
        data = raw.read()
        if not data:
            return
        yield data


def _chunks_zlib_like(raw: BlobReader, kind: str) -> Iterator[bytes]:
    """gzip (multi-member), xz (multi-stream) and bzip2, with bounded output per call."""
    def new() -> object:
        if kind == "gzip":
            return _inflate_mod.decompressobj(31)
        if kind == "xz":
            return lzma.LZMADecompressor()
        return bz2.BZ2Decompressor()

    magic = _MAGIC[kind]
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
                out = dec.decompress(data, OUT_CHUNK)  # type: ignore[attr-defined]
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
                out = dec.decompress(data, OUT_CHUNK)  # type: ignore[attr-defined]
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


def _chunks_zstd(raw: BlobReader) -> Iterator[bytes]:
    try:
        import zstandard
    except ImportError:  # pragma: no cover - a declared dependency
        raise LayerError("zstd layers need the 'zstandard' Python package") from None
    reader = zstandard.ZstdDecompressor().stream_reader(raw, read_size=IN_CHUNK, read_across_frames=True,
                                                        closefd=False)
    while True:
        try:
            out = reader.read(OUT_CHUNK)
        except zstandard.ZstdError as e:
            raise LayerError(f"corrupt zstd stream: {e}") from None
        if not out:
            return
        yield out


def uncompressed_chunks(raw: BlobReader) -> tuple[str, Iterator[bytes]]:
    """(the compression found, the uncompressed bytes in chunks of at most OUT_CHUNK)."""
    kind = detect_compression(raw.peek(_SNIFF))
    if kind == "none":
        return kind, _chunks_plain(raw)
    if kind == "zstd":
        return kind, _chunks_zstd(raw)
    return kind, _chunks_zlib_like(raw, kind)


class Hashed:
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


# ----------------------------------------------------------------------------- whole archives

class _Prefixed(io.RawIOBase):
    """A stream with bytes already read from it put back in front."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self.head, self.rest = head, rest

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self.head:
            data, self.head = (self.head, b"") if n < 0 or n >= len(self.head) else (self.head[:n], self.head[n:])
            return data
        return self.rest.read(n)

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)


def sniffed(f: BinaryIO) -> tuple[str, BinaryIO]:
    """(compression, a stream giving the same bytes from the start)."""
    head = b""
    while len(head) < _SNIFF:
        more = f.read(_SNIFF - len(head))
        if not more:
            break
        head += more
    return detect_compression(head), _Prefixed(head, f)  # type: ignore[return-value]


def decompressed(f: BinaryIO) -> BinaryIO:
    """The stream's bytes uncompressed, whatever of the supported formats it is in."""
    kind, stream = sniffed(f)
    if kind == "gzip":
        from isal import igzip
        return igzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[return-value]
    if kind == "zstd":
        import zstandard
        return zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True)  # type: ignore[return-value]
    if kind == "xz":
        return lzma.LZMAFile(stream)  # type: ignore[return-value]
    if kind == "bzip2":
        return bz2.BZ2File(stream)  # type: ignore[return-value]
    return stream
