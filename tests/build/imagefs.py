"""Images built with Docker's legacy builder (`DOCKER_BUILDKIT=0 docker build`, against
dockerd or sampand), saved, read back into what a comparison needs (the config and the
filesystem the layers make, file by file) and compared.

This reader is the tests' own, independent of sampan's image code on purpose: it is the
oracle both engines' images are measured against (a bug shared with sampan's layer code
would otherwise hide itself). It reads a docker-archive (``manifest.json`` naming the
config and the layer tars, plain or compressed, as dockerd 20.10 and sampan both write),
applies the layers in order with the overlay whiteouts (``.wh.NAME``, ``.wh..wh..opq``)
and keeps, per path: type, permission bits (set-id and sticky bits included), owner,
size, content hash, symlink target, mtime and which paths are one file (hard links of one
layer stay one inode until a later layer replaces one of them).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import posixpath
import re
import subprocess
import tarfile
from dataclasses import dataclass, field

from private_daemons import DOCKER_CLI, Dockerd

BASE_IMAGE = Dockerd.image   # busybox:local, in both daemons of a comparison
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_TYPES = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.CONTTYPE: "file", tarfile.DIRTYPE: "dir",
          tarfile.SYMTYPE: "symlink", tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo"}


@dataclass
class Entry:
    """One path of an image's filesystem."""
    type: str                 # file, dir, symlink, char, block, fifo
    mode: int                 # permission bits with set-id and sticky bits
    uid: int
    gid: int
    mtime: int                # seconds
    size: int = 0
    sha256: str = ""          # of a file's content
    target: str = ""          # of a symlink
    device: tuple[int, int] = (0, 0)
    inode: int = 0            # equal for the paths that are one file (hard links)
    xattrs: dict[str, str] = field(default_factory=dict)

    def describe(self) -> dict:
        """What must be equal between two engines' images (mtime and inode compared apart)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("mtime", "inode")}


@dataclass
class SavedImage:
    config: dict              # the image config JSON (architecture, config, history, rootfs, ...)
    layers: int               # how many layer tars
    files: dict[str, Entry]   # "/etc/passwd" -> Entry; "/" is not listed

    def hardlink_groups(self) -> set[frozenset[str]]:
        by_inode: dict[int, set[str]] = {}
        for path, entry in self.files.items():
            if entry.type == "file":
                by_inode.setdefault(entry.inode, set()).add(path)
        return {frozenset(paths) for paths in by_inode.values() if len(paths) > 1}


def _normal(name: str) -> str:
    return posixpath.normpath("/" + name)


def _remove_tree(files: dict[str, Entry], path: str, keep_self: bool) -> None:
    prefix = path.rstrip("/") + "/"
    for p in [p for p in files if p.startswith(prefix) or (p == path and not keep_self)]:
        del files[p]


def _apply(layer: tarfile.TarFile, files: dict[str, Entry], inodes: itertools.count) -> None:
    for ti in layer:
        path = _normal(ti.name)
        parent, base = posixpath.split(path)
        if base == OPAQUE:
            _remove_tree(files, parent, keep_self=True)
            continue
        if base.startswith(WHITEOUT):
            _remove_tree(files, posixpath.join(parent, base[len(WHITEOUT):]), keep_self=False)
            continue
        if path == "/":
            continue
        old = files.get(path)
        if old is not None and not (old.type == "dir" and ti.isdir()):
            _remove_tree(files, path, keep_self=False)   # a file or link replaced, or a dir by a non-dir
        xattrs = {k[len("SCHILY.xattr."):]: v for k, v in ti.pax_headers.items() if k.startswith("SCHILY.xattr.")}
        if ti.islnk():
            target = _normal(ti.linkname)
            source = files[target]
            files[path] = Entry(**{**source.__dict__, "xattrs": dict(source.xattrs)})
            continue
        entry = Entry(type=_TYPES[ti.type], mode=ti.mode & 0o7777, uid=ti.uid, gid=ti.gid, mtime=int(ti.mtime),
                      xattrs=xattrs, inode=next(inodes))
        if ti.isfile():
            data = layer.extractfile(ti).read()
            entry.size, entry.sha256 = len(data), hashlib.sha256(data).hexdigest()
        elif ti.issym():
            entry.target = ti.linkname
        elif ti.ischr() or ti.isblk():
            entry.device = (ti.devmajor, ti.devminor)
        files[path] = entry


def read_saved(archive: str) -> SavedImage:
    """The one image in a `docker save` archive."""
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))
        assert len(manifest) == 1, f"{archive}: {len(manifest)} images, want one"
        config = json.load(outer.extractfile(manifest[0]["Config"]))
        files: dict[str, Entry] = {}
        inodes = itertools.count(1)
        for name in manifest[0]["Layers"]:
            with tarfile.open(fileobj=outer.extractfile(name), mode="r:*") as layer:
                _apply(layer, files, inodes)
    return SavedImage(config=config, layers=len(manifest[0]["Layers"]), files=files)


# ---------------------------------------------------------------- comparing two engines' images

# The image config fields a build sets (the legacy builder's container.Config); a field
# absent and a field null are the same to every client (Go's nil map or slice).
CONFIG_FIELDS = ("Cmd", "Entrypoint", "Env", "WorkingDir", "User", "ExposedPorts", "Volumes", "Labels",
                 "Healthcheck", "StopSignal", "Shell", "OnBuild", "ArgsEscaped")
# Not compared, as Docker's own noise: "created" (here and in history), "container" (the
# last step's container id), "container_config" (that container's config), "docker_version";
# rootfs.diff_ids differ with every RUN (the mtimes of what it wrote), their number is compared.


# COPY/ADD steps name their sources in created_by as "file:<hash>", "dir:<hash>" or
# "multi:<hash>": moby's tarsum of the files (headers and content). The digests are numbered
# by first appearance in each image: both engines must use one digest for one content and
# different digests for different contents, but not moby's algorithm itself.
_SOURCE_DIGEST = re.compile(r"(file|dir|multi):([0-9a-f]{64})")  # no \b: moby writes "--chown=7:7file:…"


def history(config: dict) -> list[tuple[str, bool]]:
    """(created_by, empty_layer) of each step, source digests numbered (see above)."""
    numbers: dict[str, int] = {}

    def number(m: re.Match) -> str:
        return f"{m.group(1)}:<digest {numbers.setdefault(m.group(2), len(numbers) + 1)}>"

    return [(_SOURCE_DIGEST.sub(number, h.get("created_by", "")), bool(h.get("empty_layer")))
            for h in config.get("history", [])]


def config_differences(want: dict, got: dict) -> list[str]:
    out = []
    for key in ("architecture", "os", "author"):
        if want.get(key) != got.get(key):
            out.append(f"config {key}: want {want.get(key)!r}, got {got.get(key)!r}")
    for key in CONFIG_FIELDS:
        w, g = want.get("config", {}).get(key), got.get("config", {}).get(key)
        if w != g:
            out.append(f"config.{key}: want {w!r}, got {g!r}")
    want_history, got_history = history(want), history(got)
    if want_history != got_history:
        out.append("history (created_by, empty_layer) differs:\n  want " +
                   "\n       ".join(map(repr, want_history)) + "\n  got  " + "\n       ".join(map(repr, got_history)))
    if len(want["rootfs"]["diff_ids"]) != len(got["rootfs"]["diff_ids"]):
        out.append(f"layers: want {len(want['rootfs']['diff_ids'])}, got {len(got['rootfs']['diff_ids'])}")
    return out


def file_differences(want: SavedImage, got: SavedImage, build_started: float) -> list[str]:
    """Path by path. An mtime from before the build (the base image's, a COPYed or ADDed
    file's) must be equal; one from during it (a RUN's work, a directory a step made or
    changed) differs between any two builds, so both only need to be from during it."""
    out = []
    for path in sorted(want.files.keys() | got.files.keys()):
        w, g = want.files.get(path), got.files.get(path)
        if w is None or g is None:
            out.append(f"{path}: only in {'docker' if g is None else 'sampan'}'s image "
                       f"({(w or g).type})")
            continue
        wd, gd = w.describe(), g.describe()
        diff = {k: (wd[k], gd[k]) for k in wd if wd[k] != gd[k]}
        during = (w.mtime >= int(build_started), g.mtime >= int(build_started))
        if during == (False, False) and w.mtime != g.mtime or during[0] != during[1]:
            diff["mtime"] = (w.mtime, g.mtime)
        if diff:
            out.append(f"{path}: " + ", ".join(f"{k} want {a!r} got {b!r}" for k, (a, b) in diff.items()))
    if want.hardlink_groups() != got.hardlink_groups():
        out.append(f"hard links: want {sorted(map(sorted, want.hardlink_groups()))}, "
                   f"got {sorted(map(sorted, got.hardlink_groups()))}")
    return out


def differences(want: SavedImage, got: SavedImage, build_started: float) -> list[str]:
    """Everything that differs between Docker's image (want) and the other (got)."""
    return config_differences(want.config, got.config) + file_differences(want, got, build_started)


# ---------------------------------------------------------------- building with the legacy builder

def legacy_build_env(env: dict) -> dict:
    """A docker CLI environment that builds with the legacy builder (POST /build), not BuildKit."""
    return dict(env, DOCKER_BUILDKIT="0")


def docker_build(env: dict, context: str, tag: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`DOCKER_BUILDKIT=0 docker build -t tag [args] context` against the daemon of ``env``;
    text output, a failure raises with both streams."""
    cp = subprocess.run([DOCKER_CLI, "build", "-t", tag, *args, context], env=legacy_build_env(env),
                        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if cp.returncode != 0:
        raise AssertionError(f"docker build {args} {context} exit {cp.returncode}:\n{cp.stdout}\n{cp.stderr}")
    return cp
