"""Remote contexts (``POST /build?remote=URL``), as dockerd's remotecontext.Detect takes them:
a Git repository (``URL[#ref[:subdir]]``, cloned shallowly), or an HTTP(S) URL whose body is
a context tar (plain or compressed) or else a Dockerfile alone."""
from __future__ import annotations

import os
import re
import shutil
import subprocess

from ..image.layers.compression import detect_compression
from ..runtime.fsutil import remove_tree, secure_join
from .context import BuildContext, ContextError
from .copy import fetch_url

_GIT_URL = re.compile(r"^(git://|git@|github\.com/)|^https?://.*\.git(#.*)?$")
_GIT_TIMEOUT = 600.0


def is_git(url: str) -> bool:
    """moby's urlutil.IsGitURL."""
    return bool(_GIT_URL.match(url))


def fetch(url: str, workdir: str) -> BuildContext:
    """The context ``url`` names, made in ``workdir`` (missing; the caller removes it)."""
    if is_git(url):
        return clone(url, workdir)
    if not url.startswith(("http://", "https://")):
        raise ContextError(f"unable to prepare context: unsupported remote context {url!r} "
                           "(a Git repository or an http(s) URL)")
    download = workdir + ".download"
    try:
        path, _name, _mtime = fetch_url(url, download)
        with open(path, "rb") as f:
            head = f.read(512)
            if detect_compression(head) != "none" or head[257:262] == b"ustar":
                f.seek(0)
                return BuildContext.from_tar(f, workdir)
        os.makedirs(workdir, mode=0o700)
        os.rename(path, os.path.join(workdir, "Dockerfile"))
        return BuildContext.from_dir(workdir)
    finally:
        if os.path.lexists(download):
            remove_tree(download)


def clone(url: str, workdir: str) -> BuildContext:
    git = shutil.which("git")
    if git is None:
        raise ContextError("unable to prepare context: git is not installed on the daemon's host")
    repo, _, fragment = url.partition("#")
    ref, _, subdir = fragment.partition(":")
    argv = [git, "clone", "--quiet", "--depth", "1", "--recurse-submodules", *(["--branch", ref] if ref else []),
            "--", repo, workdir]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=_GIT_TIMEOUT, stdin=subprocess.DEVNULL,
                              env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    except subprocess.TimeoutExpired:
        raise ContextError(f"unable to prepare context: git clone {repo} timed out") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["failed"])[-1]
        raise ContextError(f"unable to prepare context: unable to 'git clone' to temporary context directory: {last}")
    root = secure_join(workdir, subdir) if subdir else workdir
    if not os.path.isdir(root):
        raise ContextError(f"unable to prepare context: subdirectory {subdir} of {repo} not found")
    return BuildContext.from_dir(root)
