"""sampan's images with real peers: a private dockerd (docker save/load/run/push/pull),
skopeo, umoci and Debian's docker-registry. Image IDs must match both ways."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from registry_fixtures import *  # noqa: F401,F403 - plain_registry, config_dir, ...
from registry_fixtures import SKOPEO_BIN, skopeo

from sampan.image import bootstrap
from sampan.image.store import ImageStore

REPO = Path(__file__).resolve().parents[2]
SAMPAN = [sys.executable, "-m", "sampan.cli.main"]
UMOCI = shutil.which("umoci")

# The private dockerd of the drop-in tests (its own data root, no firewall changes).
_spec = importlib.util.spec_from_file_location("sampan_dropin_fixtures", REPO / "tests" / "integration" / "conftest.py")
dropin = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dropin)
busybox_rootfs = dropin.busybox_rootfs
dockerd = dropin.dockerd


@pytest.fixture
def root(tmp_path) -> str:
    return str(tmp_path / "root")


def sampan(root: str, *args: str, stdin=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([*SAMPAN, "--root", root, *args], stdin=stdin, capture_output=True, env=env, timeout=120)


def piped(left: list[str], right: list[str], env=None) -> tuple[subprocess.CompletedProcess, int]:
    """left | right; returns (right's result, left's exit code)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), **(env or {})}
    first = subprocess.Popen(left, stdout=subprocess.PIPE, env=env)
    second = subprocess.run(right, stdin=first.stdout, capture_output=True, text=True, env=env, timeout=120)
    first.stdout.close()
    return second, first.wait(timeout=60)


def docker_id(dockerd, name: str) -> str:
    return dockerd.docker("image", "inspect", "-f", "{{.Id}}", name).stdout.strip()


def run_in(rootfs: str, *argv: str) -> str:
    return subprocess.run(["chroot", rootfs, *argv], capture_output=True, text=True, check=True).stdout


def test_docker_save_sampan_load(dockerd, root):
    result, rc = piped(["docker", "save", dockerd.image], [*SAMPAN, "--root", root, "load"], env=dockerd.env)
    assert rc == 0 and result.returncode == 0, result.stderr
    assert result.stdout == f"Loaded image: {dockerd.image}\n"
    store = ImageStore(root)
    assert store.resolve(dockerd.image).id == docker_id(dockerd, dockerd.image)
    spec = store.prepare_rootfs("from-docker", dockerd.image)
    try:
        assert os.path.isfile(f"{spec.rootfs}/bin/busybox")
        assert run_in(spec.rootfs, "/bin/sh", "-c", "echo loaded") == "loaded\n"
    finally:
        store.snapshots.remove("from-docker")


def test_sampan_save_docker_load_run(dockerd, root):
    store = ImageStore(root)
    image_id = bootstrap.bootstrap(store, "busybox", ["sampan-made/busybox:1"]).id    # a gzip layer
    result, rc = piped([*SAMPAN, "--root", root, "save", "sampan-made/busybox:1"], ["docker", "load"],
                       env=dockerd.env)
    assert rc == 0 and result.returncode == 0, result.stderr
    assert result.stdout == "Loaded image: sampan-made/busybox:1\n"
    try:
        assert docker_id(dockerd, "sampan-made/busybox:1") == image_id
        out = dockerd.docker("run", "--rm", "--network", "none", "sampan-made/busybox:1", "echo", "hi").stdout
        assert out == "hi\n"
    finally:
        dockerd.docker("rmi", "sampan-made/busybox:1", check=False)


def test_roundtrip_of_docker_image_through_sampan(dockerd, root, tmp_path):
    """docker save | sampan load; sampan save | docker load: the same image, same ID."""
    archive = tmp_path / "bb.tar"
    dockerd.docker("save", "-o", str(archive), dockerd.image)
    assert sampan(root, "load", "-i", str(archive)).returncode == 0
    assert sampan(root, "tag", dockerd.image, "again/busybox:2").returncode == 0
    result, rc = piped([*SAMPAN, "--root", root, "save", "again/busybox:2"], ["docker", "load"], env=dockerd.env)
    assert rc == 0 and result.returncode == 0, result.stderr
    try:
        assert docker_id(dockerd, "again/busybox:2") == docker_id(dockerd, dockerd.image)
    finally:
        dockerd.docker("rmi", "again/busybox:2", check=False)


@pytest.mark.skipif(SKOPEO_BIN is None, reason="skopeo is not installed")
def test_sampan_push_docker_and_skopeo_pull(dockerd, root, plain_registry, config_dir, tmp_path):
    store = ImageStore(root)
    image_id = bootstrap.bootstrap(store, "busybox").id
    name = f"{plain_registry.host}/interop/busybox:1"
    store.tag(image_id, name)
    pushed = sampan(root, "push", name)
    assert pushed.returncode == 0, pushed.stderr
    digest = pushed.stdout.decode().split("digest: ")[1].split()[0]
    dockerd.docker("pull", name)
    try:
        assert docker_id(dockerd, name) == image_id
        assert dockerd.docker("run", "--rm", "--network", "none", name, "echo", "pulled").stdout == "pulled\n"
    finally:
        dockerd.docker("rmi", name, check=False)
    r = skopeo("inspect", "--tls-verify=false", f"docker://{name}")
    assert r.returncode == 0, r.stderr
    assert f'"Digest": "{digest}"' in r.stdout
    r = skopeo("copy", "--src-tls-verify=false", f"docker://{name}", f"oci:{tmp_path / 'oci'}:1")
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(SKOPEO_BIN is None, reason="skopeo is not installed")
def test_skopeo_and_docker_push_sampan_pull(dockerd, root, plain_registry, config_dir):
    want = docker_id(dockerd, dockerd.image)
    by_skopeo = f"{plain_registry.host}/interop/from-skopeo:1"
    r = skopeo("copy", "--dest-tls-verify=false", "--src-daemon-host", f"unix://{dockerd.sock}",
               f"docker-daemon:{dockerd.image}", f"docker://{by_skopeo}")
    assert r.returncode == 0, r.stderr
    by_docker = f"{plain_registry.host}/interop/from-docker:1"
    dockerd.docker("tag", dockerd.image, by_docker)
    try:
        dockerd.docker("push", by_docker)
    finally:
        dockerd.docker("rmi", by_docker, check=False)
    for name in (by_skopeo, by_docker):
        pulled = sampan(root, "pull", name)
        assert pulled.returncode == 0, pulled.stderr
        assert ImageStore(root).resolve(name).id == want
    store = ImageStore(root)
    spec = store.prepare_rootfs("pulled", by_skopeo)
    try:
        assert run_in(spec.rootfs, "/bin/busybox", "echo", "ok") == "ok\n"
    finally:
        store.snapshots.remove("pulled")


@pytest.mark.skipif(UMOCI is None, reason="umoci is not installed (scripts/setup.sh)")
def test_umoci_unpacks_what_sampan_saved(root, tmp_path):
    store = ImageStore(root)
    bootstrap.bootstrap(store, "busybox")
    layout = tmp_path / "layout"
    assert sampan(root, "save", "--format", "oci-dir", "-o", str(layout), "busybox").returncode == 0
    bundle = tmp_path / "bundle"
    r = subprocess.run([UMOCI, "unpack", "--image", f"{layout}:latest", str(bundle)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert os.path.isfile(bundle / "rootfs" / "bin" / "busybox") and (bundle / "config.json").exists()
    # the default docker-archive is an OCI layout too, as Docker 25+ writes it
    archive = tmp_path / "bb.tar"
    assert sampan(root, "save", "-o", str(archive), "busybox").returncode == 0
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    subprocess.run(["tar", "-C", str(unpacked), "-xf", str(archive)], check=True)
    r = subprocess.run([UMOCI, "unpack", "--image", f"{unpacked}:latest", str(tmp_path / "bundle2")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert os.readlink(tmp_path / "bundle2" / "rootfs" / "bin" / "ls") == "/bin/busybox"
