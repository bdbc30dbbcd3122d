"""The one tar writer: ``tar_header`` makes every header sampan writes (layer diffs, container
export, ``docker save`` archives), ``write_tree`` walks a directory into a tar.

Trees are written in a fixed order (depth first, names sorted bytewise) with whole-second
times, numeric owners and no user or group names, xattrs as ``SCHILY.xattr.`` PAX records
(never overlayfs' own) and hardlinks within the tree kept, so the same tree gives the same
tar and the same diff_id. ``diff`` reads an overlay upper dir: its whiteouts (0/0 character
devices) become ``.wh.NAME`` and opaque directories get a ``.wh..wh..opq`` entry. ``export``
writes a tree as it is (``docker export`` of a container's merged root filesystem).
"""
from __future__ import annotations

import errno
import hashlib
import os
import stat
import zlib

from ...oci import mediatypes
from .format import BLOCK, OVERLAY_OPAQUE_XATTR, OVERLAY_XATTR_PREFIXES, WHITEOUT_OPAQUE, WHITEOUT_PREFIX, \
    LayerError, show

END_OF_ARCHIVE = bytes(2 * BLOCK)
_CHUNK = 1 << 20          # file bytes read, and uncompressed bytes gathered, per write


class DiffResult(str):
    """The diff_id (a str) with ``size`` (uncompressed tar bytes), and ``digest`` and
    ``compressed_size`` of what was written to the output (equal to diff_id/size when
    uncompressed)."""

    size: int
    digest: str
    compressed_size: int
    media_type: str


class TarSink:
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
            if self._pending_len >= _CHUNK:
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

    def result(self) -> DiffResult:
        """What was written: the diff_id, and the blob's digest and media type."""
        result = DiffResult("sha256:" + self.hash.hexdigest())
        result.size = self.size
        if self.comp is None:
            result.digest, result.compressed_size, result.media_type = str(result), self.size, mediatypes.OCI_LAYER
        else:
            result.digest = "sha256:" + self.chash.hexdigest()
            result.compressed_size = self.csize
            result.media_type = mediatypes.OCI_LAYER_GZIP if self.compression == "gzip" else \
                mediatypes.OCI_LAYER_ZSTD
        return result


# ----------------------------------------------------------------------------- headers

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


def tar_header(name: bytes, typeflag: bytes, *, size: int = 0, mode: int = 0, uid: int = 0, gid: int = 0,
               mtime: int = 0, linkname: bytes = b"", devmajor: int = 0, devminor: int = 0,
               xattrs: dict[str, bytes] | None = None) -> bytes:
    """A ustar header, preceded by a PAX header when a name is long or not ASCII, a number
    does not fit, or there are xattrs. The member's data and ``padding`` follow it."""
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
        out += data + padding(len(data))
    out += _block(name[:100], typeflag, size if _fits(size, 12) else 0, mode,
                  uid if _fits(uid, 8) else 0, gid if _fits(gid, 8) else 0,
                  mtime if _fits(mtime, 12) else 0, linkname[:100], devmajor, devminor)
    return out


def padding(size: int) -> bytes:
    """The zeros that fill a member's last block."""
    return bytes(-size % BLOCK)


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
    assert len(block) == BLOCK
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


# ----------------------------------------------------------------------------- trees

def _read_xattrs(path: bytes) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}
        raise
    out = {}
    for n in names:
        if n.startswith(OVERLAY_XATTR_PREFIXES):
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


def write_tree(root_dir: str, w: TarSink, *, upper_of: list[str] | None = None) -> None:
    """Write the tree under ``root_dir`` (not itself) and the end-of-archive marker to ``w``.

    With ``upper_of`` (the lower dirs, top first; [] for none known) the tree is an overlay
    upper dir: whiteouts and opaque directories become their OCI entries, and a whiteout
    that hides nothing in the lower dirs is left out. Without it, the tree is taken as it is.
    """
    root = os.fsencode(os.path.abspath(root_dir))
    overlay = upper_of is not None
    lowers = [os.fsencode(os.path.abspath(d)) for d in (upper_of or [])]
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
            if overlay and stat.S_ISCHR(m) and st.st_rdev == 0:
                if hides_something(crel):
                    wname = (rel + b"/" if rel else b"") + WHITEOUT_PREFIX + n
                    w.write(tar_header(wname, b"0", mode=0o600, uid=st.st_uid, gid=st.st_gid, mtime=mtime))
                continue
            if stat.S_ISSOCK(m):
                continue
            xattrs = _read_xattrs(cpath)
            common = dict(mode=stat.S_IMODE(m), uid=st.st_uid, gid=st.st_gid, mtime=mtime, xattrs=xattrs)
            if stat.S_ISDIR(m):
                w.write(tar_header(crel + b"/", b"5", **common))  # type: ignore[arg-type]
                if overlay and _is_opaque(cpath):
                    w.write(tar_header(crel + b"/" + WHITEOUT_OPAQUE, b"0", mode=stat.S_IMODE(m) & 0o777,
                                       uid=st.st_uid, gid=st.st_gid, mtime=mtime))
                walk(crel)
            elif stat.S_ISREG(m):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1:
                    first = links.get(key)
                    if first is not None:
                        w.write(tar_header(crel, b"1", linkname=first, **common))  # type: ignore[arg-type]
                        continue
                    links[key] = crel
                w.write(tar_header(crel, b"0", size=st.st_size, **common))  # type: ignore[arg-type]
                _copy_file(cpath, st.st_size, w)
            elif stat.S_ISLNK(m):
                w.write(tar_header(crel, b"2", linkname=os.readlink(cpath), **common))  # type: ignore[arg-type]
            elif stat.S_ISCHR(m) or stat.S_ISBLK(m):
                t = b"3" if stat.S_ISCHR(m) else b"4"
                w.write(tar_header(crel, t, devmajor=os.major(st.st_rdev), devminor=os.minor(st.st_rdev),
                                   **common))  # type: ignore[arg-type]
            elif stat.S_ISFIFO(m):
                w.write(tar_header(crel, b"6", **common))  # type: ignore[arg-type]

    walk(b"")
    w.write(END_OF_ARCHIVE)


def _copy_file(path: bytes, size: int, w: TarSink) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        left = size
        while left:
            chunk = os.read(fd, min(left, _CHUNK))
            if not chunk:
                raise LayerError(f"file {show(path)} shrank while it was being read")
            w.write(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    if size % BLOCK:
        w.write(padding(size))


def diff(upper_dir: str, lower_dirs: list[str] | None, out_fileobj: object, *,
         compression: str | None = None, level: int | None = None) -> DiffResult:
    """Write the layer tar of an overlay upper dir to ``out_fileobj``; returns the diff_id.

    ``lower_dirs`` (top first) are consulted to leave out whiteouts that hide nothing.
    With ``compression`` ("gzip"/"zstd") the output is compressed; the result's ``digest``
    is then the compressed blob's.
    """
    w = TarSink(out_fileobj, compression, level)
    write_tree(upper_dir, w, upper_of=list(lower_dirs or []))
    w.close()
    return w.result()


def export(root_dir: str, out_fileobj: object) -> DiffResult:
    """Write the tree under ``root_dir`` as it is, as a plain tar (``docker export``)."""
    w = TarSink(out_fileobj, None, None)
    write_tree(root_dir, w)
    w.close()
    return w.result()
