"""Path safety and atomic writes: every path from a config is resolved inside its root."""
from __future__ import annotations

import errno
import os

_MAX_LINKS = 255


def secure_join(root: str, unsafe: str) -> str:
    """Join `unsafe` under `root`, resolving symlinks as if `root` were `/`.

    `..` never climbs above root and absolute symlink targets restart at root, so the result
    always lies inside root, whatever the tree holds (the same guarantee as openat2 RESOLVE_IN_ROOT).
    """
    root = os.path.abspath(root)
    pending = [p for p in unsafe.split("/") if p not in ("", ".")]
    pending.reverse()
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop()
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            target = os.readlink(candidate)
        except OSError:
            resolved.append(part)
            continue
        links += 1
        if links > _MAX_LINKS:
            raise OSError(40, "too many levels of symbolic links", os.path.join("/", *resolved, part))
        if target.startswith("/"):
            resolved = []
        parts = [p for p in target.split("/") if p not in ("", ".")]
        pending.extend(reversed(parts))
    return os.path.join(root, *resolved)


def atomic_write(path: str, data: bytes, mode: int = 0o600, durable: bool = True) -> None:
    """Replace path with data in one rename. Not durable: without the fsync, for what a host
    crash makes meaningless anyway (runtime state under /run, a process's exit record)."""
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def mkdir_all_in(root: str, path: str, mode: int = 0o755) -> str:
    """Create `path` (already resolved inside root) and its parents, refusing to leave root."""
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(path)]) != real_root:
        raise OSError(1, "path escapes the root filesystem", path)
    os.makedirs(path, mode=mode, exist_ok=True)
    return path


def remove_tree(path: str) -> None:
    """rm -rf without shutil (its import is slow); missing is fine. Never follows a symlink,
    the top one included (a symlink is removed itself): every directory is opened with
    O_NOFOLLOW and emptied through its fd, so a name swapped for a symlink meanwhile cannot
    lead the removal out of the tree."""
    try:
        fd = os.open(path, _DIR_NOFOLLOW)
    except FileNotFoundError:
        return
    except OSError as e:
        if e.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        _unlink(path)
        return
    try:
        _empty(fd)
    finally:
        os.close(fd)
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass


_DIR_NOFOLLOW = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _unlink(name: str, dir_fd: int | None = None) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def _empty(dir_fd: int) -> None:
    """Remove everything inside the directory open as ``dir_fd``."""
    for entry in list(os.scandir(dir_fd)):
        if not entry.is_dir(follow_symlinks=False):
            _unlink(entry.name, dir_fd)
            continue
        try:
            fd = os.open(entry.name, _DIR_NOFOLLOW, dir_fd=dir_fd)
        except FileNotFoundError:
            continue
        except OSError as e:
            if e.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise
            _unlink(entry.name, dir_fd)  # replaced by a file or a symlink meanwhile
            continue
        try:
            _empty(fd)
        finally:
            os.close(fd)
        try:
            os.rmdir(entry.name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
