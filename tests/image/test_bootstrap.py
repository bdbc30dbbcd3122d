"""Base images from the host: busybox (busybox-static; fast, reproducible) and Debian
(debootstrap; made once per test session, then reused from the engine root's cache)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess

import pytest

from registry_fixtures import *  # noqa: F401,F403 - remove_tmp_path_after

from sampan.image import bootstrap
from sampan.image.store import ImageStore

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def run_in(rootfs: str, *argv: str) -> str:
    """Run a command of the image inside its mounted root filesystem (chroot)."""
    return subprocess.run(["chroot", rootfs, *argv], capture_output=True, text=True, check=True,
                          timeout=60).stdout


def check_config(store: ImageStore, image_id: str, cmd: list[str]) -> dict:
    img = store.get(image_id)
    cfg = img.config
    assert cfg["config"] == {"Env": [PATH_ENV], "Cmd": cmd}
    assert (cfg["architecture"], cfg["os"]) == ("amd64", "linux")
    assert cfg["rootfs"] == {"type": "layers", "diff_ids": img.diff_ids} and len(img.diff_ids) == 1
    assert len(cfg["history"]) == 1 and cfg["history"][0]["created_by"]
    manifest = json.loads(store.content.read(img.manifest_digest))
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    return cfg


@pytest.mark.skipif(not os.path.exists(bootstrap.BUSYBOX_BIN), reason="busybox-static is not installed")
def test_busybox(tmp_path):
    store = ImageStore(str(tmp_path / "root"))
    res = bootstrap.bootstrap(store, "busybox")
    assert res.tags == ["busybox:latest"] and store.resolve("busybox").id == res.id
    check_config(store, res.id, ["sh"])
    spec = store.prepare_rootfs("bb", "busybox")
    try:
        root = spec.rootfs
        assert os.readlink(f"{root}/bin/ls") == "/bin/busybox"
        assert stat.S_IMODE(os.stat(f"{root}/tmp").st_mode) == 0o1777
        assert open(f"{root}/etc/passwd").read().startswith("root:x:0:0:root:/root:/bin/sh\n")
        assert "nogroup:x:65534:" in open(f"{root}/etc/group").read()
        assert run_in(root, "/bin/sh", "-c", "echo hi from $(basename $0)") == "hi from sh\n"
    finally:
        store.snapshots.remove("bb")
    # reproducible: another engine root gets the very same image
    other = ImageStore(str(tmp_path / "other"))
    assert bootstrap.bootstrap(other, "busybox", ["base:1"]).id == res.id
    assert other.resolve("base:1").id == res.id


def test_unknown_kind(tmp_path):
    with pytest.raises(bootstrap.BootstrapError, match="unknown base image"):
        bootstrap.bootstrap(ImageStore(str(tmp_path)), "alpine")


def test_dynamic_busybox_is_refused(tmp_path):
    with pytest.raises(bootstrap.BootstrapError, match="not statically linked"):
        bootstrap.busybox_rootfs(str(tmp_path / "fs"), busybox=shutil.which("ls"))


def _mirror_reachable() -> bool:
    try:
        with socket.create_connection(("deb.debian.org", 80), timeout=5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def debian_root(tmp_path_factory):
    """An engine root where Debian was bootstrapped once for the whole session (~30 s)."""
    if shutil.which("debootstrap", path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
        pytest.skip("debootstrap is not installed (scripts/setup.sh)")
    if not _mirror_reachable():
        pytest.skip("the Debian mirror is not reachable")
    path = str(tmp_path_factory.mktemp("debian-root"))
    store = ImageStore(path)
    res = bootstrap.bootstrap(store, "debian")
    store.close()
    yield path, res
    shutil.rmtree(path, ignore_errors=True)


def test_debian(debian_root):
    path, res = debian_root
    store = ImageStore(path)
    assert res.tags == ["debian:bookworm", "debian:latest"] and not res.cached
    check_config(store, res.id, ["bash"])
    spec = store.prepare_rootfs("deb", "debian:bookworm")
    try:
        root = spec.rootfs
        assert open(f"{root}/etc/debian_version").read().startswith("12.")
        assert not os.path.exists(f"{root}/etc/hostname")
        assert os.listdir(f"{root}/var/cache/apt/archives") in ([], ["partial"], ["lock", "partial"])
        assert run_in(root, "/bin/bash", "-c", "dpkg-query -W -f='${Package}' coreutils") == "coreutils"
    finally:
        store.snapshots.remove("deb")


def test_debian_again_comes_from_the_cache(debian_root):
    path, first = debian_root
    store = ImageStore(path)
    store.remove("debian:bookworm")
    store.remove("debian:latest")
    assert store.list() == []                       # the image and its blob are gone...
    res = bootstrap.bootstrap(store, "debian", ["deb:mine"])
    assert res.cached and res.id == first.id        # ...and come back without debootstrap
    assert store.resolve("deb:mine").id == first.id
