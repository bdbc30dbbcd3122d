"""A build context: the directory COPY and ADD read from, made from the tar a client sends
(``from_tar``) or a local directory (``from_dir``), with its ``.dockerignore``.

What the context holds is what the docker CLI would have sent: files ``.dockerignore``
excludes are not there for COPY/ADD (``walk``, ``sources``), though the builder still reads
the Dockerfile and ``.dockerignore`` themselves. ``checksum`` hashes what a COPY would copy
(names, types, modes, link targets, contents — never mtimes or owners) for the build cache;
file contents are hashed once per (device, inode, size, mtime) within one context.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import stat
from typing import BinaryIO, Iterator

from .. import errors
from ..image.layers import LayerError, apply
from ..image.layers.compression import BlobReader, uncompressed_chunks
from ..image.layers.format import WHITEOUT_PREFIX, show
from ..image.layers.tarread import TarStream, iter_headers
from ..runtime.fsutil import remove_tree, secure_join
from .ignore import Matcher, PatternError, clean, glob_regex, has_wildcards, read_dockerignore

_HASH_CHUNK = 1 << 20


class ContextError(errors.Invalid):
    """A bad context or a COPY/ADD source it cannot give; one line."""


Entry = tuple[str, os.stat_result]  # (path relative to the context root, lstat of it)


class BuildContext:
    """The context's files under ``root``; ``ignore`` is its .dockerignore."""

    def __init__(self, root: str, owned: bool, dockerignore: bool = True) -> None:
        self.root = os.path.abspath(root)
        self._owned = owned  # extracted by us (from_tar): remove() deletes it
        try:
            self.ignore = Matcher(read_dockerignore(self.root) if dockerignore else ())
        except PatternError as e:
            raise ContextError(f"invalid .dockerignore: {e}") from None
        self._content_hashes: dict[tuple[int, int, int, int], str] = {}

    # -- making one
    @classmethod
    def from_dir(cls, path: str, dockerignore: bool = True) -> BuildContext:
        """A directory used in place: a local build's context, or with ``dockerignore``
        False an image's root filesystem for COPY --from (whose /.dockerignore means nothing)."""
        if not os.path.isdir(path):
            raise ContextError(f"unable to prepare context: path {path!r} not found")
        return cls(path, owned=False, dockerignore=dockerignore)

    @classmethod
    def from_tar(cls, src: BinaryIO, workdir: str) -> BuildContext:
        """Extract the context tar (plain, gzip, bzip2, xz or zstd) into ``workdir`` (missing
        or empty). Members that would land outside it — absolute names, ``..`` climbing out,
        hardlinks to outside, anything under a symlink — are refused with one line, and
        nothing is left in workdir then."""
        created = not os.path.exists(workdir)
        os.makedirs(workdir, mode=0o700, exist_ok=True)
        if not created and os.listdir(workdir):
            raise ContextError(f"context directory {workdir} is not empty")
        try:
            spool = open(os.open(os.path.dirname(os.path.abspath(workdir)), os.O_TMPFILE | os.O_RDWR, 0o600),
                         "w+b")
            with spool:
                # First pass: names checked as the bytes are spooled; then unpacked by the
                # layer applier (flat mode: no symlinked parents, hardlinks inside only).
                _check_members(src, spool)
                spool.flush()
                spool.seek(0)
                apply(spool, workdir, mode="flat")
            return cls(workdir, owned=True)
        except BaseException as e:
            _empty(workdir, remove=created)
            if isinstance(e, LayerError):
                raise ContextError(f"invalid context: {e}") from None
            if isinstance(e, OSError):
                raise ContextError(f"invalid context: {e.strerror or e}") from None
            raise

    def remove(self) -> None:
        """Delete an extracted context (a directory context is the user's: kept)."""
        if self._owned:
            _empty(self.root, remove=True)

    # -- the builder's reads
    def dockerfile(self, name: str = "Dockerfile") -> bytes:
        """The Dockerfile's bytes (readable even when .dockerignore excludes it). As the
        legacy builder, "Dockerfile" falls back to "dockerfile"."""
        candidates = [name] + (["dockerfile"] if name == "Dockerfile" else [])
        for candidate in candidates:
            try:
                with open(secure_join(self.root, candidate), "rb") as f:
                    return f.read()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                continue
            except OSError as e:
                raise ContextError(f"cannot read Dockerfile {name}: {e.strerror}") from None
        raise ContextError(f"Cannot locate specified Dockerfile: {name}")

    def sources(self, patterns: list[str], instruction: str = "COPY") -> list[str]:
        """The context paths a COPY/ADD names: each source cleaned (``./a``, ``/a`` → ``a``,
        the root is "."), a glob (Go's filepath.Match) replaced by what it matches in walk
        order; excluded files count as missing."""
        out: list[str] = []
        for pattern in patterns:
            rel = _source_rel(pattern, instruction)
            if has_wildcards(rel):
                out.extend(self._glob(rel, instruction))
                continue
            if rel != "." and not self.present(rel):
                raise ContextError(f"{instruction} failed: file not found in build context or excluded by "
                                   f".dockerignore: stat {rel}: file does not exist")
            out.append(rel)
        if not out:
            raise ContextError(f"{instruction} failed: no source files were specified")
        return out

    def present(self, rel: str) -> bool:
        """Whether the context (as the CLI would send it) has ``rel``, following a symlink at
        its end within the context as the legacy builder does."""
        resolved = self.resolve(rel)
        try:
            own = os.lstat(os.path.join(self.root, rel))
            st = os.stat(resolved)
        except OSError:
            return False
        # Both the name and what it resolves to must have been sent.
        return self._included(rel, stat.S_ISDIR(own.st_mode)) and \
            self._included(os.path.relpath(resolved, self.root), stat.S_ISDIR(st.st_mode))

    def resolve(self, rel: str) -> str:
        """The absolute path ``rel`` names, symlinks followed inside the context only."""
        return secure_join(self.root, rel)

    def walk(self, rel: str = ".") -> Iterator[Entry]:
        """Every entry under directory ``rel`` the context holds, depth first in name order,
        never following symlinks; an excluded directory with re-included files is given
        before them (the CLI's tar makes it so)."""
        return walk_tree(self.root, rel, self.ignore)

    def checksum(self, rel_paths: list[str]) -> str:
        """"sha256:…" of what copying these sources copies (as resolved by COPY)."""
        h = hashlib.sha256()
        for rel in rel_paths:
            path = self.resolve(rel)
            try:
                top = os.lstat(path)
            except OSError as e:
                raise ContextError(f"cannot read {rel} in the build context: {e.strerror}") from None
            h.update(f"source\0{rel}\n".encode("utf-8", "surrogateescape"))
            self._hash_entry(h, ".", path, top)
            if stat.S_ISDIR(top.st_mode):
                base = os.path.relpath(path, self.root)
                cut = 0 if base == "." else len(base) + 1
                for sub, st in self.walk(base):
                    self._hash_entry(h, sub[cut:], os.path.join(self.root, sub), st)
        return "sha256:" + h.hexdigest()

    # -- inside
    def _included(self, rel: str, is_dir: bool) -> bool:
        """Whether the CLI's walk would send ``rel``: no excluded directory on the way that
        it skips whole, and ``rel`` itself not excluded (unless a directory it descends)."""
        if not self.ignore or rel == ".":
            return True
        parts = clean(rel).split("/")
        info: list[bool] | None = None
        for depth in range(1, len(parts) + 1):
            path = "/".join(parts[:depth])
            excluded, info = self.ignore.step(path, info)
            if not excluded:
                continue
            if depth == len(parts) and not is_dir:
                return False
            if self.ignore.prunes(path):
                return False
        return True

    def _glob(self, pattern: str, instruction: str) -> list[str]:
        try:
            regex = glob_regex(pattern)
        except PatternError:
            return []  # moby ignores filepath.Match's error: the pattern matches nothing
        depth = pattern.count("/") + 1  # `*`, `?` and classes never match "/" in practice
        return [rel for rel, _ in walk_tree(self.root, ".", self.ignore, max_depth=depth)
                if regex.match(rel)]

    def _hash_entry(self, h: "hashlib._Hash", name: str, path: str, st: os.stat_result) -> None:
        mode = st.st_mode
        if stat.S_ISREG(mode):
            extra = self._content_hash(path, st)
        elif stat.S_ISLNK(mode):
            extra = os.readlink(path)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            extra = f"{os.major(st.st_rdev)},{os.minor(st.st_rdev)}"
        else:
            extra = ""
        h.update(f"{name}\0{mode:o}\0{extra}\n".encode("utf-8", "surrogateescape"))

    def _content_hash(self, path: str, st: os.stat_result) -> str:
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        known = self._content_hashes.get(key)
        if known is not None:
            return known
        h = hashlib.sha256()
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            while chunk := os.read(fd, _HASH_CHUNK):
                h.update(chunk)
        finally:
            os.close(fd)
        self._content_hashes[key] = digest = h.hexdigest()
        return digest


def walk_tree(root: str, rel: str, ignore: Matcher, max_depth: int | None = None) -> Iterator[Entry]:
    """The entries under ``root/rel`` that ``ignore`` leaves (see BuildContext.walk);
    ``max_depth`` limits how many path components below the root are visited."""
    rel = clean(rel)
    info: list[bool] | None = None
    if ignore and rel != ".":
        for depth, _ in enumerate(rel.split("/"), 1):
            _, info = ignore.step("/".join(rel.split("/")[:depth]), info)
    return _walk(root, "" if rel == "." else rel, ignore, info, max_depth)


def _walk(root: str, rel: str, ignore: Matcher, info: list[bool] | None,
          max_depth: int | None) -> Iterator[Entry]:
    if max_depth is not None and (rel.count("/") + 1 if rel else 0) >= max_depth:
        return
    try:
        names = sorted(os.listdir(os.path.join(root, rel) if rel else root))
    except (FileNotFoundError, NotADirectoryError):
        return
    for name in names:
        sub = f"{rel}/{name}" if rel else name
        st = os.lstat(os.path.join(root, sub))
        is_dir = stat.S_ISDIR(st.st_mode)
        child_info = None
        if ignore:
            excluded, child_info = ignore.step(sub, info)
            if excluded:
                if is_dir and not ignore.prunes(sub):
                    # Only what an exception re-includes is in the context, with this
                    # directory made to hold it.
                    below = list(_walk(root, sub, ignore, child_info, max_depth))
                    if below:
                        yield sub, st
                        yield from below
                continue
        yield sub, st
        if is_dir:
            yield from _walk(root, sub, ignore, child_info, max_depth)


def _empty(directory: str, remove: bool) -> None:
    """Delete what ``directory`` holds (and it too if ``remove``). Entries are taken by
    lstat: remove_tree() given a symlink would empty the directory the link points at."""
    if os.path.islink(directory):
        raise ContextError(f"context directory {directory} is a symlink")
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                remove_tree(entry.path)
            else:
                os.unlink(entry.path)
    if remove:
        os.rmdir(directory)


def _source_rel(source: str, instruction: str) -> str:
    """A COPY source as a context path: leading "/" and "./" dropped, cleaned; ".." that
    climbs out is refused as the legacy builder does."""
    cleaned = clean(source.lstrip("/") or ".")
    if cleaned == ".." or cleaned.startswith("../"):
        raise ContextError(f"{instruction} failed: forbidden path outside the build context: {source} ()")
    return cleaned


def _check_members(src: BinaryIO, spool: BinaryIO) -> None:
    """Read the whole context tar, spooling its bytes, refusing members that would land
    outside the context or that the layer applier would take for whiteouts."""
    raw = BlobReader(src, "sha256", spool)
    _, chunks = uncompressed_chunks(raw)
    stream = TarStream(chunks)
    for h in iter_headers(stream):
        _check_name(h.name, "member")
        if h.type == b"1":
            _check_name(h.linkname, f"hardlink {show(h.name)} to")
        if posixpath.basename(h.name.rstrip(b"/")).startswith(WHITEOUT_PREFIX):
            raise LayerError(f"member {show(h.name)}: whiteout names (.wh.*) are not allowed in a context")
        stream.skip_member(h.size)
    stream.drain()
    raw.drain()


def _check_name(name: bytes, what: str) -> None:
    if name.startswith(b"/"):
        raise LayerError(f"{what} {show(name)} is an absolute path")
    depth = 0
    for part in name.split(b"/"):
        if part == b"..":
            depth -= 1
            if depth < 0:
                raise LayerError(f"{what} {show(name)} escapes the context")
        elif part not in (b"", b"."):
            depth += 1
