"""Base images made from the host, without a registry: ``busybox`` from Debian's
``busybox-static`` and ``debian`` through ``debootstrap --variant=minbase``.

Each becomes a real OCI image of one gzip layer: config with Env PATH, Cmd,
architecture/os, rootfs diff_ids and history. The busybox image is reproducible (every
mtime is the binary's), so the same host gives the same image ID each time. A
debootstrap takes about 40 s: its layer blob is kept (hardlinked, so it costs no space
while the image exists) under ``<root>/cache/bootstrap/`` and later bootstraps reuse it.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

from ..oci import mediatypes
from ..timefmt import rfc3339_seconds
from . import layers as _layers
from . import platform as _platform
from . import reference as _ref
from .archive import make_manifest
from .snapshots import mountpoints, unmount_path
from .store import ImageError, ImageStore

KINDS = ("busybox", "debian")
BUSYBOX_BIN = "/bin/busybox"
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_GZIP_LEVEL = 1        # ISA-L's fastest that still compresses well: the layer is made once


class BootstrapError(ImageError):
    """debootstrap or the host's busybox failed (an internal error of the host)."""


@dataclass
class Bootstrapped:
    id: str
    tags: list[str]           # familiar references
    cached: bool = False      # the debootstrap result was reused


# ---------------------------------------------------------------------------------------------
# Layer and image from a directory

class _Gzip:
    """Compresses what ``layers.diff`` writes (ISA-L: several times zlib's speed) into a
    content writer."""

    def __init__(self, out: object) -> None:
        from isal import isal_zlib
        self.out = out
        self.comp = isal_zlib.compressobj(_GZIP_LEVEL, isal_zlib.DEFLATED, 31)

    def write(self, data: bytes) -> None:
        chunk = self.comp.compress(data)
        if chunk:
            self.out.write(chunk)  # type: ignore[attr-defined]

    def close(self) -> None:
        self.out.write(self.comp.flush())  # type: ignore[attr-defined]


def _layer_from_dir(store: ImageStore, directory: str, lease: str) -> tuple[str, str]:
    """Store ``directory`` as a gzip layer blob; returns (blob digest, diff_id)."""
    writer = store.content.writer()
    try:
        gz = _Gzip(writer)
        diff_id = _layers.diff(directory, None, gz)
        gz.close()
        store.meta.add_to_lease(lease, blobs=[writer.digest])   # before GC could see it unreferenced
        digest = writer.commit()
    finally:
        writer.abort()
    return digest, str(diff_id)


def _image(store: ImageStore, digest: str, diff_id: str, *, created: str, created_by: str, cmd: list[str],
           tags: list[str]) -> Bootstrapped:
    plat = _platform.host()
    config = {"architecture": plat.architecture, "os": plat.os,
              "config": {"Env": [PATH_ENV], "Cmd": cmd},
              "created": created,
              "history": [{"created": created, "created_by": created_by}],
              "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
    if plat.variant:
        config["variant"] = plat.variant
    config_bytes = json.dumps(config, separators=(",", ":")).encode()
    manifest = make_manifest(config_bytes, [(digest, mediatypes.OCI_LAYER_GZIP, store.content.size(digest))])
    image_id = store.add_image(manifest, config_bytes, [(digest, mediatypes.OCI_LAYER_GZIP)])
    shown = []
    for tag in tags:
        ref = _ref.parse(tag)
        store.tag(image_id, ref)
        shown.append(ref.familiar())
    return Bootstrapped(image_id, shown)


def _workdir(store: ImageStore, kind: str) -> str:
    base = os.path.join(store.root, "tmp")
    os.makedirs(base, mode=0o700, exist_ok=True)
    return tempfile.mkdtemp(prefix=f"bootstrap-{kind}-", dir=base)


def remove_workdir(work: str) -> None:
    """Remove a work directory, first unmounting what a failed debootstrap may have left
    mounted in it (proc, sys): rm -rf must never reach into those."""
    for mp in sorted((m for m in mountpoints() if m.startswith(work + "/")), key=len, reverse=True):
        unmount_path(mp)
    shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# busybox

def _is_static(path: str) -> bool:
    """An ELF executable without a program interpreter (PT_INTERP) needs no libraries."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF":
            return False
        wide, endian = head[4] == 2, "<" if head[5] == 1 else ">"
        if wide:
            phoff, = struct.unpack_from(endian + "Q", head, 0x20)
            phentsize, phnum = struct.unpack_from(endian + "HH", head, 0x36)
        else:
            phoff, = struct.unpack_from(endian + "I", head, 0x1C)
            phentsize, phnum = struct.unpack_from(endian + "HH", head, 0x2A)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from(endian + "I", table, i * phentsize)[0] != 3 for i in range(phnum))


def busybox_rootfs(directory: str, busybox: str = BUSYBOX_BIN) -> float:
    """Make a busybox root filesystem in ``directory``; returns the mtime given to every
    entry (the binary's), which makes the layer reproducible."""
    if not os.path.isfile(busybox):
        raise BootstrapError(f"{busybox} not found: install Debian's busybox-static")
    if not _is_static(busybox):
        raise BootstrapError(f"{busybox} is not statically linked: install Debian's busybox-static")
    epoch = int(os.stat(busybox).st_mtime)
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys", "tmp", "root", "home", "var",
              "run"):
        os.makedirs(os.path.join(directory, d), mode=0o755, exist_ok=True)
    os.chmod(os.path.join(directory, "tmp"), 0o1777)
    os.chmod(os.path.join(directory, "root"), 0o700)
    os.chmod(directory, 0o755)
    shutil.copyfile(busybox, os.path.join(directory, "bin", "busybox"))
    os.chmod(os.path.join(directory, "bin", "busybox"), 0o755)
    applets = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        path = os.path.join(directory, applet)
        if applet == "bin/busybox" or os.path.lexists(path):
            continue
        os.symlink("/bin/busybox", path)
    with open(os.path.join(directory, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    with open(os.path.join(directory, "etc", "group"), "w") as f:
        f.write("root:x:0:\nnogroup:x:65534:\n")
    for dirpath, dirnames, filenames in os.walk(directory, topdown=False):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), (epoch, epoch), follow_symlinks=False)
    os.utime(directory, (epoch, epoch))
    return epoch


def _package_version(name: str) -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", name], capture_output=True, text=True)
    except FileNotFoundError:
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def bootstrap_busybox(store: ImageStore, tags: list[str] | None = None) -> Bootstrapped:
    work = _workdir(store, "busybox")
    try:
        rootfs = os.path.join(work, "rootfs")
        os.mkdir(rootfs)
        epoch = busybox_rootfs(rootfs)
        version = _package_version("busybox-static")
        with store.lease() as lease:
            digest, diff_id = _layer_from_dir(store, rootfs, lease)
            return _image(store, digest, diff_id, created=rfc3339_seconds(epoch),
                          created_by=f"sampan image bootstrap busybox (busybox-static {version or 'unknown'})",
                          cmd=["sh"], tags=tags or ["busybox:latest"])
    finally:
        remove_workdir(work)


# ---------------------------------------------------------------------------------------------
# debian

def _cache_dir(store: ImageStore) -> str:
    return os.path.join(store.root, "cache", "bootstrap")


def _cached(store: ImageStore, name: str, lease: str) -> tuple[str, str, str] | None:
    """(digest, diff_id, created) of a cached layer, now in the content store; None if absent."""
    meta_path = os.path.join(_cache_dir(store), name + ".json")
    blob_path = os.path.join(_cache_dir(store), name + ".tar.gz")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        digest, diff_id, created = meta["digest"], meta["diff_id"], meta["created"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not os.path.isfile(blob_path):
        return None
    store.meta.add_to_lease(lease, blobs=[digest], layers=[diff_id])
    if not store.content.has(digest):
        try:
            store.import_layer(blob_path, mediatypes.OCI_LAYER_GZIP, expected_digest=digest, expected_diff_id=diff_id,
                               lease=lease)
        except ImageError:
            return None     # a damaged cache: make it again
    return digest, diff_id, created


def _remember(store: ImageStore, name: str, digest: str, diff_id: str, created: str) -> None:
    cache = _cache_dir(store)
    os.makedirs(cache, mode=0o700, exist_ok=True)
    blob_path = os.path.join(cache, name + ".tar.gz")
    tmp = blob_path + ".tmp"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    try:
        os.link(store.content.path(digest), tmp)
    except OSError:
        shutil.copyfile(store.content.path(digest), tmp)
    os.replace(tmp, blob_path)
    with open(os.path.join(cache, name + ".json.tmp"), "w") as f:
        json.dump({"digest": digest, "diff_id": diff_id, "created": created}, f)
    os.replace(os.path.join(cache, name + ".json.tmp"), os.path.join(cache, name + ".json"))


def debian_rootfs(directory: str, suite: str = DEBIAN_SUITE, mirror: str = DEBIAN_MIRROR,
                  log: Callable[[str], None] | None = None) -> None:
    """``debootstrap --variant=minbase`` into ``directory``, then drop what a container image
    should not carry (apt lists and caches, the host's name)."""
    exe = shutil.which("debootstrap", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if exe is None:
        raise BootstrapError("debootstrap not found: install Debian's debootstrap package")
    proc = subprocess.Popen([exe, "--variant=minbase", suite, directory, mirror], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip("\n")
        tail = (tail + [line])[-5:]
        if log is not None:
            log(line)
    if proc.wait() != 0:
        raise BootstrapError(f"debootstrap failed (exit {proc.returncode}): {' / '.join(tail)}")
    for rel in ("var/cache/apt/archives", "var/lib/apt/lists"):
        d = os.path.join(directory, rel)
        for name in os.listdir(d) if os.path.isdir(d) else []:
            path = os.path.join(d, name)
            if os.path.isfile(path) and not os.path.islink(path):
                os.unlink(path)
    for rel in ("var/cache/apt/pkgcache.bin", "var/cache/apt/srcpkgcache.bin", "etc/hostname"):
        if os.path.lexists(os.path.join(directory, rel)):
            os.unlink(os.path.join(directory, rel))


def bootstrap_debian(store: ImageStore, tags: list[str] | None = None, *, suite: str = DEBIAN_SUITE,
                     mirror: str = DEBIAN_MIRROR, log: Callable[[str], None] | None = None,
                     use_cache: bool = True) -> Bootstrapped:
    name = f"debian-{suite}-minbase"
    tags = tags or [f"debian:{suite}", "debian:latest"]
    created_by = f"debootstrap --variant=minbase {suite} {mirror}"
    with store.lease() as lease:
        hit = _cached(store, name, lease) if use_cache else None
        if hit is not None:
            digest, diff_id, created = hit
            result = _image(store, digest, diff_id, created=created, created_by=created_by, cmd=["bash"], tags=tags)
            result.cached = True
            return result
        work = _workdir(store, "debian")
        try:
            rootfs = os.path.join(work, "rootfs")
            debian_rootfs(rootfs, suite, mirror, log)
            created = rfc3339_seconds(time.time())
            digest, diff_id = _layer_from_dir(store, rootfs, lease)
        finally:
            remove_workdir(work)
        result = _image(store, digest, diff_id, created=created, created_by=created_by, cmd=["bash"], tags=tags)
        _remember(store, name, digest, diff_id, created)
        return result


def bootstrap(store: ImageStore, kind: str, tags: list[str] | None = None,
              log: Callable[[str], None] | None = None) -> Bootstrapped:
    if kind == "busybox":
        return bootstrap_busybox(store, tags)
    if kind == "debian":
        return bootstrap_debian(store, tags, log=log)
    raise BootstrapError(f"unknown base image {kind!r}: choose one of {', '.join(KINDS)}")
