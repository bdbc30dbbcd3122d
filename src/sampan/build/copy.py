"""COPY and ADD into a root filesystem, by the legacy builder's rules (moby
builder/dockerfile copy.go, internals.go, pkg/archive):

- the destination is relative to WORKDIR unless absolute; several sources need a
  destination ending in "/"; a file source goes into the destination when that ends in "/"
  or is an existing directory, else becomes it; a directory source gives its contents;
- new parent directories are 0755, owned by the --chown owner for a file's parents and by
  root for a directory's; copied entries keep mode (unless --chmod), whole-second mtime and
  hardlinks among themselves, and are owned by 0:0 unless --chown. moby copies the mode
  and then chowns every copied entry, so the kernel drops what a chown drops: S_ISUID,
  S_ISGID where group-executable, and security.capability, of all but directories;
- the destination is resolved inside the rootfs (the image's symlinks followed within it);
  below it, what is in the way of a copied entry is replaced, never followed;
- a source is resolved inside its own root: a symlink naming it is followed within that
  root, symlinks inside a copied directory are copied as symlinks;
- ADD of a local archive (tar, gzip, bzip2, xz, zstd) unpacks it, with its own owners.
"""
from __future__ import annotations

import email.utils
import hashlib
import os
import posixpath
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Protocol

from ..image.layers import LayerError, apply
from ..image.layers.compression import BlobReader, uncompressed_chunks
from ..image.layers.tarread import TarStream, iter_headers
from ..runtime.fsutil import remove_tree, secure_join
from ..runtime.userdb import read_db
from .context import ContextError, walk_tree
from .ignore import Matcher, PatternError

_NS = 1_000_000_000
_FETCH_TIMEOUT = 60.0     # seconds without progress before an ADD URL download fails
_CHUNK = 1 << 20
UNNAMED = "__unnamed__"   # a downloaded file whose name the URL does not tell (moby's name)


class Heredoc(Protocol):
    name: str
    content: str


def copy_into(rootfs: str, src_root: str, sources: list[str], dest: str, *, workdir: str = "/",
              chown: tuple[int, int] | None = None, chmod: int | None = None, parents: bool = False,
              extract_archives: bool = False, exclude: list[str] | tuple[str, ...] = (),
              ignore: Matcher | None = None, instruction: str = "COPY") -> None:
    """Copy ``sources`` (paths relative to ``src_root``, as BuildContext.sources gives them)
    to ``dest`` in ``rootfs``. ``ignore`` is the context's .dockerignore (files it excludes
    are not copied out of a directory); ``exclude`` are --exclude patterns, relative to each
    source; ``parents`` keeps each source's parent directories under dest (--parents)."""
    if len(sources) > 1 and not dest.endswith("/"):
        raise ContextError(f"When using {instruction} with more than one source file, "
                           "the destination must be a directory and end with a /")
    try:
        excluded = Matcher(exclude)
    except PatternError as e:
        raise ContextError(f"{instruction} failed: --exclude: {e}") from None
    job = _Copy(rootfs, src_root, chown or (0, 0), chmod, excluded, ignore or Matcher(), instruction)
    target = normalise_dest(workdir, dest)
    try:
        for rel in sources:
            if excluded and excluded.matches(rel):
                continue
            job.source(rel, target, parents, extract_archives)
    except OSError as e:
        raise ContextError(f"{instruction} failed: {e.strerror or e}: "
                           f"{_inside(rootfs, e.filename) if e.filename else dest}") from None


def normalise_dest(workdir: str, dest: str) -> str:
    """The absolute destination in the image, a trailing "/" kept (moby's normalizeDest)."""
    if dest.startswith("/"):
        return dest
    joined = posixpath.normpath(posixpath.join("/", workdir or "/", dest))
    joined = "/" + joined.lstrip("/")
    return joined + "/" if dest.endswith("/") and joined != "/" else joined


def resolve_chown(rootfs: str, spec: str) -> tuple[int, int]:
    """--chown=user[:group] as uid, gid: numbers as they are, names from the image's
    /etc/passwd and /etc/group; a user alone stands for the group too (moby's parseChownFlag)."""
    parts = spec.split(":")
    if len(parts) > 2:
        raise ContextError(f"invalid chown string format: {spec}")
    user, group = parts[0], parts[-1]
    uid = _lookup(rootfs, "/etc/passwd", user, "uid for user", "user")
    gid = _lookup(rootfs, "/etc/group", group, "gid for group", "group")
    return uid, gid


def _lookup(rootfs: str, db: str, name: str, what: str, kind: str) -> int:
    if name.isdigit():
        return int(name)
    for entry in read_db(rootfs, db):
        if len(entry) >= 3 and entry[0] == name and entry[2].isdigit():
            return int(entry[2])
    raise ContextError(f"unable to convert uid/gid chown string to host mapping: can't find {what} {name}: "
                       f"no such {kind}: {name}")


def write_heredoc(rootfs: str, dest: str, heredoc: Heredoc, workdir: str = "/",
                  chown: tuple[int, int] | None = None, chmod: int | None = None) -> None:
    """COPY <<EOF dest: the heredoc's (already expanded) content as a file named after its
    delimiter inside dest when dest ends in "/" or is a directory, else as dest; mode 0644
    unless chmod."""
    job = _Copy(rootfs, rootfs, chown or (0, 0), chmod, Matcher(), Matcher(), "COPY")
    try:
        path = job.file_destination(normalise_dest(workdir, dest), heredoc.name)
        job.clear(path, is_dir=False)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, heredoc.content.encode("utf-8", "surrogateescape"))
            job.finish_fd(fd, 0o644, int(time.time()) * _NS)
        finally:
            os.close(fd)
    except OSError as e:
        raise ContextError(f"COPY failed: {e.strerror or e}: {dest}") from None


def fetch_url(url: str, dest_dir: str, checksum: str | None = None) -> tuple[str, str, int]:
    """ADD <url>: download into ``dest_dir`` as moby does (mode 0600, mtime from
    Last-Modified or the epoch) and return (path, filename — "" when the URL does not tell
    one —, mtime). ``checksum`` ("sha256:…") is verified; any failure is one line and
    leaves no file."""
    algorithm, _, expected = (checksum or "").partition(":")
    if checksum and (algorithm not in ("sha256", "sha384", "sha512") or not expected):
        raise ContextError(f"unsupported checksum {checksum!r}: expected sha256:<hex> (or sha384, sha512)")
    request = urllib.request.Request(url, headers={"User-Agent": "sampan-builder"})
    try:
        response = urllib.request.urlopen(request, timeout=_FETCH_TIMEOUT)  # noqa: S310 - the user's URL
    except urllib.error.HTTPError as e:
        raise ContextError(f"failed to fetch URL: {url}: status {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ContextError(f"failed to fetch URL: {url}: {getattr(e, 'reason', None) or e}") from None
    with response:
        filename = _download_name(url, response.headers.get("Content-Disposition"))
        os.makedirs(dest_dir, exist_ok=True)
        path = os.path.join(dest_dir, filename or UNNAMED)
        digest = hashlib.new(algorithm or "sha256")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                while chunk := response.read(_CHUNK):
                    digest.update(chunk)
                    os.write(fd, chunk)
            finally:
                os.close(fd)
            if checksum and digest.hexdigest() != expected.lower():
                raise ContextError(f"checksum mismatch for {url}: expected {checksum}, "
                                   f"got {algorithm}:{digest.hexdigest()}")
        except ContextError:
            os.unlink(path)
            raise
        except (OSError, ValueError) as e:  # a connection broken mid-body
            os.unlink(path)
            raise ContextError(f"failed to fetch URL: {url}: {getattr(e, 'strerror', None) or e}") from None
        mtime = _http_time(response.headers.get("Last-Modified"))
    os.utime(path, (mtime, mtime))
    return path, filename, mtime


def _download_name(url: str, disposition: str | None) -> str:
    """moby's getFilenameForDownload: the URL path's last part, else Content-Disposition's."""
    path = urllib.parse.unquote(urllib.parse.urlparse(url).path)
    if path and not path.endswith("/"):
        return posixpath.basename(path)
    if disposition:
        for param in disposition.split(";")[1:]:
            key, _, value = param.strip().partition("=")
            value = value.strip().strip('"')
            if key.lower() == "filename" and value and not value.endswith("/"):
                return posixpath.basename(value)
    return ""


def _http_time(value: str | None) -> int:
    if not value:
        return 0
    try:
        return int(email.utils.parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError):
        return 0


def _inside(rootfs: str, filename: object) -> str:
    """An OSError's path as the image shows it."""
    name = os.fsdecode(filename)  # type: ignore[arg-type]
    root = os.path.abspath(rootfs)
    return "/" + os.path.relpath(name, root) if name.startswith(root + "/") else name


class _Copy:
    """One COPY/ADD: where entries go and with which owner and mode."""

    def __init__(self, rootfs: str, src_root: str, owner: tuple[int, int], chmod: int | None,
                 excluded: Matcher, ignore: Matcher, instruction: str) -> None:
        self.rootfs = os.path.abspath(rootfs)
        self.src_root = os.path.abspath(src_root)
        self.owner = owner
        self.chmod = chmod
        self.excluded = excluded
        self.ignore = ignore
        self.instruction = instruction
        self.links: dict[tuple[int, int], str] = {}   # (dev, inode) of a source file -> its copy

    # -- sources
    def source(self, rel: str, target: str, parents: bool, extract: bool) -> None:
        path = secure_join(self.src_root, rel)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise ContextError(f"{self.instruction} failed: stat {rel}: file does not exist") from None
        parent = posixpath.dirname(rel) if parents and rel != "." else ""
        if stat.S_ISDIR(st.st_mode):
            self.directory(path, posixpath.join(target, rel) if parents and rel != "." else target)
        elif extract and _is_archive(path):
            self.extract(path, rel, posixpath.join(target, parent) if parent else target)
        else:
            into = posixpath.join(target, parent) + "/" if parents else target
            dst = self.file_destination(into, posixpath.basename(rel))
            self.put(path, st, dst)

    def directory(self, src: str, target: str) -> None:
        dest = secure_join(self.rootfs, target)
        if not os.path.isdir(dest):
            self.make_dirs(dest, (0, 0))  # parents root's; the directory itself the owner's
            os.chown(dest, *self.owner, follow_symlinks=False)
        base = os.path.relpath(src, self.src_root)
        cut = 0 if base == "." else len(base) + 1
        dir_times: list[tuple[str, int]] = []
        for sub, st in walk_tree(self.src_root, base, self.ignore):
            name = sub[cut:]
            if self.excluded and self.excluded.matches(name):
                continue
            dst = os.path.join(dest, name)
            self.put(os.path.join(self.src_root, sub), st, dst)
            if stat.S_ISDIR(st.st_mode):
                dir_times.append((dst, st.st_mtime_ns))
        for dst, mtime_ns in dir_times:  # after their contents were written
            seconds = mtime_ns // _NS * _NS
            os.utime(dst, ns=(seconds, seconds), follow_symlinks=False)

    def extract(self, src: str, rel: str, target: str) -> None:
        dest = secure_join(self.rootfs, target)
        self.make_dirs(dest, (0, 0))
        try:
            apply(src, dest, mode="flat")
        except LayerError as e:
            raise ContextError(f"{self.instruction} failed: cannot extract {rel}: {e}") from None

    # -- destinations
    def file_destination(self, target: str, name: str) -> str:
        """Where a file named ``name`` goes for destination ``target``, its parents made."""
        resolved = secure_join(self.rootfs, target)
        if target.endswith("/") or os.path.isdir(resolved):
            self.make_dirs(resolved, self.owner)
            return os.path.join(resolved, name)
        self.make_dirs(os.path.dirname(resolved), self.owner)
        return resolved

    def make_dirs(self, path: str, owner: tuple[int, int]) -> None:
        """mkdir -p of a path secure_join resolved: what exists of it is real directories,
        the rest is made 0755 and given ``owner``."""
        missing: list[str] = []
        head = path
        while not os.path.lexists(head):
            missing.append(head)
            head = os.path.dirname(head)
        if not os.path.isdir(head) or os.path.islink(head):
            raise ContextError(f"{self.instruction} failed: mkdir {_inside(self.rootfs, path)}: "
                               f"{_inside(self.rootfs, head)} is not a directory")
        for directory in reversed(missing):
            os.mkdir(directory, 0o700)
            os.chown(directory, *owner)
            os.chmod(directory, 0o755)

    def clear(self, path: str, is_dir: bool) -> bool:
        """Make room at ``path``: True when a directory stays there (merged into)."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if is_dir:
                return True
            remove_tree(path)  # a real directory (lstat): remove_tree never leaves it
        else:
            os.unlink(path)
        return False

    # -- entries
    def put(self, src: str, st: os.stat_result, dst: str) -> None:
        mode = st.st_mode
        mtime = st.st_mtime_ns // _NS * _NS
        kept = self.clear(dst, stat.S_ISDIR(mode))
        if stat.S_ISDIR(mode):
            if not kept:
                os.mkdir(dst, 0o700)
            os.chown(dst, *self.owner, follow_symlinks=False)
            os.chmod(dst, self.chmod if self.chmod is not None else stat.S_IMODE(mode))
        elif stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            first = self.links.get(key) if st.st_nlink > 1 else None
            if first is not None:
                os.link(first, dst, follow_symlinks=False)
                return
            self.write_file(src, dst, stat.S_IMODE(mode), mtime)
            if st.st_nlink > 1:
                self.links[key] = dst
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(src), dst)
            os.chown(dst, *self.owner, follow_symlinks=False)
            os.utime(dst, ns=(mtime, mtime), follow_symlinks=False)
        elif stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            os.mknod(dst, stat.S_IFMT(mode) | 0o600, st.st_rdev)
            self.set_mode_and_owner(dst, stat.S_IMODE(mode))
            os.utime(dst, ns=(mtime, mtime), follow_symlinks=False)
        # sockets are not copied (moby's archive leaves them out)

    def write_file(self, src: str, dst: str, mode: int, mtime_ns: int) -> None:
        fd_in = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                _copy_bytes(fd_in, fd)
                self.finish_fd(fd, mode, mtime_ns)
            finally:
                os.close(fd)
        finally:
            os.close(fd_in)

    def finish_fd(self, fd: int, mode: int, mtime_ns: int) -> None:
        self.set_mode_and_owner(fd, mode)
        os.utime(fd, ns=(mtime_ns, mtime_ns))

    def set_mode_and_owner(self, target: int | str, mode: int) -> None:
        """The copied mode, then the owner (the kernel's chown clears set-id bits and file
        capabilities, as after moby's copy); an explicit --chmod is applied last and kept
        whole, as BuildKit does. ``target``: an fd, or the path of a node just made."""
        if self.chmod is None:
            os.chmod(target, mode)
        os.chown(target, *self.owner)
        if self.chmod is not None:
            os.chmod(target, self.chmod)


def _copy_bytes(fd_in: int, fd_out: int) -> None:
    """The whole file, in the kernel where it can (copy_file_range reflinks on btrfs/xfs)."""
    try:
        while os.copy_file_range(fd_in, fd_out, 1 << 30):
            pass
        return
    except OSError:
        os.lseek(fd_in, 0, os.SEEK_SET)
        os.lseek(fd_out, 0, os.SEEK_SET)
        os.ftruncate(fd_out, 0)
    while chunk := os.read(fd_in, _CHUNK):
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd_out, view):]


def _is_archive(path: str) -> bool:
    """Whether ADD unpacks the file: its (decompressed) bytes start with a valid tar header
    (moby's isArchivePath)."""
    try:
        with open(path, "rb") as f:
            _, chunks = uncompressed_chunks(BlobReader(f, "sha256", None))
            next(iter_headers(TarStream(chunks)))
        return True
    except (LayerError, OSError, StopIteration, ValueError, EOFError):
        return False
