"""sampan's images with real peers: a private dockerd (docker save/load/run/push/pull),
skopeo, umoci and Debian's docker-registry, driven through a private sampand as a user
drives it (the sampan CLI and the docker CLI). Image IDs must match both ways.

The private dockerd runs in a network namespace of its own; the registry, sampand and skopeo
run in that namespace too, so each of them reaches the registry at 127.0.0.1."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from private_daemons import DOCKER_CLI, SAMPAN, Sampand
from registry_fixtures import REGISTRY_BIN, SKOPEO_BIN, RegistryServer, skopeo

REPO = Path(__file__).resolve().parents[2]
UMOCI = shutil.which("umoci")


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# The module-scoped private dockerd fixture of the drop-in tests (its own data root and
# network namespace, checked to leave the host as found).
dropin = _load("sampan_dropin_fixtures", REPO / "tests" / "integration" / "conftest.py")
busybox_rootfs = dropin.busybox_rootfs
dockerd = dropin.dockerd


@pytest.fixture(scope="module")
def netns(dockerd) -> str:
    return dockerd.netns


@pytest.fixture(scope="module")
def sampand(netns):
    d = Sampand(network=netns)
    try:
        d.start()
        yield d
    finally:
        problems = d.teardown()
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def registry(netns):
    if REGISTRY_BIN is None:
        pytest.skip("docker-registry is not installed (scripts/setup.sh)")
    directory = tempfile.mkdtemp(prefix="sampan-registry-interop-")
    r = RegistryServer(directory, netns=netns).start()
    yield r
    r.stop()
    shutil.rmtree(directory, ignore_errors=True)


def ok(cp: subprocess.CompletedProcess) -> str:
    assert cp.returncode == 0, (cp.args, cp.stdout, cp.stderr)
    return cp.stdout.decode() if isinstance(cp.stdout, bytes) else cp.stdout


def piped(left: list[str], left_env: dict, right: list[str], right_env: dict) -> str:
    """left | right, both must succeed; returns right's stdout."""
    first = subprocess.Popen(left, stdout=subprocess.PIPE, env=left_env, stdin=subprocess.DEVNULL)
    second = subprocess.run(right, stdin=first.stdout, capture_output=True, text=True, env=right_env, timeout=120)
    first.stdout.close()
    assert first.wait(timeout=60) == 0, left
    assert second.returncode == 0, second.stderr
    return second.stdout



def docker_id(dockerd, name: str) -> str:
    return dockerd.docker("image", "inspect", "-f", "{{.Id}}", name).stdout.strip()


def sampan_id(sampand, name: str) -> str:
    return ok(sampand.docker("image", "inspect", "-f", "{{.Id}}", name)).strip()


def test_docker_save_sampan_load_run(dockerd, sampand):
    out = piped([DOCKER_CLI, "save", dockerd.image], dockerd.env,
                [*SAMPAN, "load"], sampand.env)
    assert out == f"Loaded image: {dockerd.image}\n"
    assert sampan_id(sampand, dockerd.image) == docker_id(dockerd, dockerd.image)
    run = sampand.sampan("run", "--rm", "--network", "none", dockerd.image, "sh", "-c", "echo loaded")
    assert ok(run) == "loaded\n"


def test_sampan_save_docker_load_run(dockerd, sampand):
    ok(sampand.sampan("image", "bootstrap", "busybox", "-t", "sampan-made/busybox:1"))   # a gzip layer
    made = sampan_id(sampand, "sampan-made/busybox:1")
    out = piped([*SAMPAN, "save", "sampan-made/busybox:1"], sampand.env,
                [DOCKER_CLI, "load"], dockerd.env)
    assert out == "Loaded image: sampan-made/busybox:1\n"
    try:
        assert docker_id(dockerd, "sampan-made/busybox:1") == made
        out = dockerd.docker("run", "--rm", "--network", "none", "sampan-made/busybox:1", "echo", "hi").stdout
        assert out == "hi\n"
    finally:
        dockerd.docker("rmi", "sampan-made/busybox:1", check=False)


def test_roundtrip_of_docker_image_through_sampan(dockerd, sampand, tmp_path):
    """docker save | sampan load; sampan save | docker load: the same image, same ID."""
    archive = tmp_path / "bb.tar"
    dockerd.docker("save", "-o", str(archive), dockerd.image)
    ok(sampand.sampan("load", "-i", str(archive)))
    ok(sampand.sampan("tag", dockerd.image, "again/busybox:2"))
    piped([*SAMPAN, "save", "again/busybox:2"], sampand.env, [DOCKER_CLI, "load"], dockerd.env)
    try:
        assert docker_id(dockerd, "again/busybox:2") == docker_id(dockerd, dockerd.image)
    finally:
        dockerd.docker("rmi", "again/busybox:2", check=False)


@pytest.mark.skipif(SKOPEO_BIN is None, reason="skopeo is not installed")
def test_sampan_push_docker_and_skopeo_pull(dockerd, sampand, registry, netns, tmp_path):
    name = f"{registry.host}/interop/busybox:1"
    ok(sampand.sampan("image", "bootstrap", "busybox", "-t", name))
    made = sampan_id(sampand, name)
    digest = ok(sampand.sampan("push", name)).split("digest: ")[1].split()[0]
    dockerd.docker("pull", name)
    try:
        assert docker_id(dockerd, name) == made
        assert dockerd.docker("run", "--rm", "--network", "none", name, "echo", "pulled").stdout == "pulled\n"
    finally:
        dockerd.docker("rmi", name, check=False)
    r = skopeo("inspect", "--tls-verify=false", f"docker://{name}", netns=netns)
    assert r.returncode == 0, r.stderr
    assert f'"Digest": "{digest}"' in r.stdout
    r = skopeo("copy", "--src-tls-verify=false", f"docker://{name}", f"oci:{tmp_path / 'oci'}:1", netns=netns)
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(SKOPEO_BIN is None, reason="skopeo is not installed")
def test_skopeo_and_docker_push_sampan_pull(dockerd, sampand, registry, netns):
    want = docker_id(dockerd, dockerd.image)
    by_skopeo = f"{registry.host}/interop/from-skopeo:1"
    r = skopeo("copy", "--dest-tls-verify=false", "--src-daemon-host", f"unix://{dockerd.sock}",
               f"docker-daemon:{dockerd.image}", f"docker://{by_skopeo}", netns=netns)
    assert r.returncode == 0, r.stderr
    by_docker = f"{registry.host}/interop/from-docker:1"
    dockerd.docker("tag", dockerd.image, by_docker)
    try:
        dockerd.docker("push", by_docker)
    finally:
        dockerd.docker("rmi", by_docker, check=False)
    for name in (by_skopeo, by_docker):
        ok(sampand.sampan("pull", name))
        assert sampan_id(sampand, name) == want
    run = sampand.sampan("run", "--rm", "--network", "none", by_skopeo, "/bin/busybox", "echo", "ok")
    assert ok(run) == "ok\n"


@pytest.mark.skipif(UMOCI is None, reason="umoci is not installed (scripts/setup.sh)")
def test_umoci_unpacks_what_sampan_saved(sampand, tmp_path):
    """`sampan save` writes a docker-archive that is an OCI image layout too, as Docker 25+
    writes it (ref.name the tag): umoci unpacks it as it is."""
    ok(sampand.sampan("image", "bootstrap", "busybox", "-t", "umoci/busybox:latest"))
    archive = tmp_path / "bb.tar"
    ok(sampand.sampan("save", "-o", str(archive), "umoci/busybox:latest"))
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    subprocess.run(["tar", "-C", str(unpacked), "-xf", str(archive)], check=True)
    bundle = tmp_path / "bundle"
    r = subprocess.run([UMOCI, "unpack", "--image", f"{unpacked}:latest", str(bundle)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert os.path.isfile(bundle / "rootfs" / "bin" / "busybox") and (bundle / "config.json").exists()
    assert os.readlink(bundle / "rootfs" / "bin" / "ls") == "/bin/busybox"
