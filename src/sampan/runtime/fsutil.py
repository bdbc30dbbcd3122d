"""Path safety and atomic writes: every path from a config is resolved inside its root."""
from __future__ import annotations

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
    """rm -rf without shutil (its import is slow); never follows symlinks; missing is fine."""
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return
    except NotADirectoryError:
        os.unlink(path)
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            remove_tree(entry.path)
        else:
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                pass
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
