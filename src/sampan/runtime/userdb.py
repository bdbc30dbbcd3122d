"""An image's user database: the lines of its /etc/passwd or /etc/group, read inside its root
filesystem (symlinks resolved within it), for `--user` and COPY/ADD `--chown`."""
from __future__ import annotations

from .fsutil import secure_join


def read_db(rootfs: str, path: str) -> list[list[str]]:
    """The colon-separated fields of each entry of ``path`` (e.g. "/etc/passwd") in rootfs;
    comments and blank lines skipped, a missing or unreadable file gives none."""
    try:
        with open(secure_join(rootfs, path), encoding="utf-8", errors="replace") as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith("#")]
    except OSError:
        return []
