"""The image endpoints as dockerd answers them, through the docker CLI, docker-py and raw HTTP:
import (``/images/create?fromSrc=-``), save (``/images/get``), load, pull, push, login
(``/auth``), tag, rmi, prune, history, inspect, image events; insecure registries."""
from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import tarfile
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "image"))
from registry_fixtures import *  # noqa: E402,F401,F403 - registry fixtures
from registry_fixtures import PASSWORD, USER, RegistryServer, free_port, needs_registry  # noqa: E402

from conftest import REPO, start_daemon, stop_daemon  # noqa: E402
from sampan.cli.client import APIError, _UnixConnection  # noqa: E402

BUSYBOX_ROOTFS = REPO / ".cache" / "images" / "busybox"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """In the host's network namespace: it reaches the registries and HTTP servers here."""
    d = start_daemon(tmp_path_factory, network="host")
    yield d
    stop_daemon(d)


def _rootfs_tar(extra: bytes = b"") -> bytes:
    """busybox's root filesystem; with ``extra`` in /extra (a layer no image has yet)."""
    data = subprocess.run(["tar", "-C", str(BUSYBOX_ROOTFS), "-c", "."], check=True, capture_output=True).stdout
    if not extra:
        return data
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data)) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for m in src:
            dst.addfile(m, src.extractfile(m) if m.isfile() else None)
        info = tarfile.TarInfo("extra")
        info.size = len(extra)
        dst.addfile(info, io.BytesIO(extra))
    return out.getvalue()


def _request(sampand, method: str, path: str, body: bytes | None = None,
             headers: dict | None = None) -> tuple[int, bytes]:
    conn = _UnixConnection(sampand.sock)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, data


def _lines(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def _image_ids(sampand) -> set[str]:
    return {i["Id"] for i in sampand.client().get("/images/json", all=1)}


def _tmp_files(sampand) -> list[str]:
    tmp = os.path.join(sampand.root, "tmp")
    return os.listdir(tmp) if os.path.isdir(tmp) else []


# ------------------------------------------------------------------ import
def test_docker_import_from_stdin_and_from_a_file_with_changes(sampand, tmp_path):
    d = sampand.docker
    rootfs = _rootfs_tar()
    r = d("import", "-", "imported:1", input=rootfs)
    assert r.returncode == 0, r.stderr
    image_id = r.stdout.strip().decode()
    assert image_id.startswith("sha256:") and len(image_id) == 71
    r = d("image", "inspect", "-f", "{{.Id}} {{json .RepoTags}} {{.Os}}", "imported:1")
    assert r.stdout.decode().split() == [image_id, '["imported:1"]', "linux"], r.stderr
    path = tmp_path / "rootfs.tar"
    path.write_bytes(rootfs)
    r = d("import", "-c", 'CMD ["sh"]', "-c", "ENV A=b", "-m", "a message", str(path), "imported2")
    assert r.returncode == 0, r.stderr
    r = d("image", "inspect", "-f", "{{json .Config.Cmd}} {{json .Config.Env}} {{.Comment}}", "imported2")
    assert r.stdout.decode().strip() == '["sh"] ["A=b"] a message', r.stderr
    r = d("run", "--rm", "imported2", "sh", "-c", "echo $A")
    assert r.returncode == 0 and r.stdout == b"b\n", r.stderr
    r = d("history", "--format", "{{.Comment}}", "imported2")
    assert r.stdout.decode().split("\n")[0] == "a message"
    # the answer dockerd gives: the ID in one status line
    status, body = _request(sampand, "POST", "/v1.45/images/create?fromSrc=-&repo=imported3:x&changes="
                            "CMD%20%5B%22sh%22%5D&platform=linux/amd64", rootfs)
    assert status == 200 and _lines(body) == [{"status": _lines(body)[0]["status"]}]
    assert d("rmi", "imported:1", "imported2", "imported3:x").returncode == 0


def test_bad_imports_are_refused_and_leave_nothing(sampand, tmp_path):
    before = _image_ids(sampand)
    r = sampand.docker("import", "-c", "BOGUS x", "-", "bad:1", input=_rootfs_tar())
    assert r.returncode == 1 and r.stderr.startswith(b"Error response from daemon: "), r
    assert len(r.stderr.strip().split(b"\n")) == 1
    status, body = _request(sampand, "POST", "/images/create?fromSrc=-&repo=bad&changes=RUN%20x", _rootfs_tar())
    assert status == 400 and json.loads(body)["message"]
    status, body = _request(sampand, "POST", "/images/create?fromSrc=-&repo=bad", b"not a tar at all\n" * 100)
    assert status == 400 and json.loads(body)["message"], body
    status, body = _request(sampand, "POST", "/images/create?fromSrc=ftp://127.0.0.1/x.tar")
    assert status == 400
    assert _image_ids(sampand) == before and _tmp_files(sampand) == []


@pytest.fixture
def rootfs_server(tmp_path):
    """A local HTTP server with /rootfs.tar (busybox's root filesystem)."""
    import functools
    import http.server

    from local_http import serving
    (tmp_path / "rootfs.tar").write_bytes(_rootfs_tar())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    with serving(handler) as url:
        yield url


def test_import_from_a_url(sampand, rootfs_server):
    before = _image_ids(sampand)
    status, body = _request(sampand, "POST", f"/images/create?fromSrc={rootfs_server}/rootfs.tar&repo=fromurl&tag=1")
    messages = _lines(body)
    assert status == 200 and messages[-1]["status"].startswith("sha256:"), body
    importing = [m for m in messages if m["status"] == "Importing"]
    assert importing and importing[-1]["progressDetail"]["current"] == importing[-1]["progressDetail"]["total"]
    r = sampand.docker("image", "inspect", "-f", "{{.Comment}}", "fromurl:1")
    assert r.stdout.decode().strip() == f"Imported from {rootfs_server}/rootfs.tar"
    r = sampand.docker("import", "-c", 'CMD ["sh"]', f"{rootfs_server}/rootfs.tar", "fromurl:2")
    assert r.returncode == 0 and r.stdout.startswith(b"sha256:"), r
    r = sampand.docker("image", "inspect", "-f", "{{json .Config.Cmd}}", "fromurl:2")
    assert r.stdout.strip() == b'["sh"]', r
    assert sampand.docker("rmi", "fromurl:1", "fromurl:2").returncode == 0
    r = sampand.docker("import", f"{rootfs_server}/nosuch.tar", "fromurl:3")
    assert r.returncode == 1 and b"404" in r.stderr, r
    status, body = _request(sampand, "POST", "/images/create?fromSrc=http://127.0.0.1:9/x.tar")
    assert status == 503, body  # nothing listens there
    assert _image_ids(sampand) == before


# ------------------------------------------------------------------ save and load
def test_docker_save_pipes_into_docker_load(sampand, tmp_path):
    d = sampand.docker
    assert d("tag", "busybox", "saved:1").returncode == 0
    saved = d("save", "busybox", "saved:1")
    assert saved.returncode == 0, saved.stderr
    with tarfile.open(fileobj=io.BytesIO(saved.stdout)) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
    assert sorted(t for m in manifest for t in m["RepoTags"]) == ["busybox:latest", "saved:1"]
    assert d("rmi", "saved:1").returncode == 0
    r = d("load", input=saved.stdout)
    assert r.returncode == 0, r.stderr
    assert set(r.stdout.decode().splitlines()) == {"Loaded image: busybox:latest", "Loaded image: saved:1"}
    # the two endpoints dockerd has
    status, one = _request(sampand, "GET", "/images/saved:1/get")
    assert status == 200
    status, two = _request(sampand, "GET", "/images/get?names=busybox&names=saved:1")
    assert status == 200 and two == saved.stdout
    with tarfile.open(fileobj=io.BytesIO(one)) as tar:
        assert [m["RepoTags"] for m in json.load(tar.extractfile("manifest.json"))] == [["saved:1"]]
    r = d("save", "nosuchimage:1")
    assert r.returncode == 1 and b"No such image" in r.stderr, r.stderr
    assert d("rmi", "saved:1").returncode == 0


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _without_metadata(data: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data)) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for m in src:
            if m.name not in ("manifest.json", "index.json", "repositories", "oci-layout"):
                dst.addfile(m, src.extractfile(m) if m.isfile() else None)
    return out.getvalue()


def test_load_of_a_bad_archive_is_reported_in_the_stream(sampand):
    good = sampand.docker("save", "busybox").stdout
    before = _image_ids(sampand)
    for bad in (_truncated(good), b"this is not a tar\n" * 1000, _without_metadata(good), b""):
        status, body = _request(sampand, "POST", "/images/load?quiet=1", bad)
        assert status == 200, body  # as dockerd: the error comes in the JSON stream
        last = _lines(body)[-1]
        assert last["error"] and last["errorDetail"]["message"] == last["error"]
        r = sampand.docker("load", input=bad)
        assert r.returncode == 1 and r.stdout == b"", r
        assert r.stderr.strip() == last["error"].encode()  # the message alone, on one line
    assert _image_ids(sampand) == before and _tmp_files(sampand) == []


def test_load_streams_progress_unless_quiet(sampand):
    good = sampand.docker("save", "busybox").stdout
    status, body = _request(sampand, "POST", "/images/load?quiet=0", good)
    assert status == 200
    messages = _lines(body)
    loading = [m for m in messages if m.get("status") == "Loading layer"]
    assert loading and all(m["id"] and m["progressDetail"]["total"] > 0 for m in loading)
    assert loading[-1]["progressDetail"]["current"] == loading[-1]["progressDetail"]["total"]
    assert messages[-1] == {"stream": "Loaded image: busybox:latest\n"}
    status, body = _request(sampand, "POST", "/images/load?quiet=1", good)
    assert _lines(body) == [{"stream": "Loaded image: busybox:latest\n"}]


# ------------------------------------------------------------------ registries
@needs_registry
def test_push_and_pull_through_a_registry(sampand, plain_registry):
    d = sampand.docker
    name = f"{plain_registry.host}/api/bb"
    r = d("import", "-c", 'CMD ["sh"]', "-", f"{name}:1", input=_rootfs_tar(os.urandom(64 << 10)))
    assert r.returncode == 0, r.stderr
    r = d("push", f"{name}:1")
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert f"The push refers to repository [{name}]" in out and "1: digest: sha256:" in out, out
    assert d("tag", f"{name}:1", f"{name}:2").returncode == 0
    r = d("push", "--all-tags", name)  # every tag of the repository
    assert r.returncode == 0 and {"1: digest", "2: digest"} <= {x[:9] for x in r.stdout.decode().splitlines()}, r
    status, body = _request(sampand, "POST", f"/images/{name}:2/push", headers={"X-Registry-Auth": "e30="})
    assert status == 200 and _lines(body)[-1]["aux"]["Tag"] == "2", body  # the tag in the name
    assert d("rmi", f"{name}:2").returncode == 0
    r = d("pull", "--all-tags", name)  # (no tag: every tag, as dockerd)
    assert r.returncode == 0 and f"Status: Downloaded newer image for {name}\n" in r.stdout.decode(), r
    status, body = _request(sampand, "POST", f"/images/create?fromImage={name}")
    pulled = [m["id"] for m in _lines(body) if m["status"] == "Pulling from api/bb"]
    assert status == 200 and sorted(pulled) == ["1", "2"], body
    assert d("rmi", f"{name}:2").returncode == 0
    assert d("rmi", f"{name}:1").returncode == 0
    r = d("pull", f"{name}:1")
    assert r.returncode == 0, r.stderr
    assert f"Status: Downloaded newer image for {name}:1" in r.stdout.decode(), r.stdout
    r = d("pull", "--platform", "linux/amd64", f"{name}:1")
    assert f"Status: Image is up to date for {name}:1" in r.stdout.decode(), r.stdout
    r = d("run", "--rm", f"{name}:1", "echo", "pulled")
    assert r.stdout == b"pulled\n", r.stderr
    # the messages as dockerd streams them (the layer is gone with the image)
    assert d("rmi", f"{name}:1").returncode == 0
    assert d("image", "prune", "-f").returncode == 0
    status, body = _request(sampand, "POST", f"/images/create?fromImage={name}&tag=1")
    messages = _lines(body)
    assert status == 200 and messages[0] == {"status": "Pulling from api/bb", "progressDetail": {}, "id": "1"}
    statuses = [m["status"] for m in messages]
    assert "Pull complete" in statuses and statuses[-2].startswith("Digest: sha256:")
    downloading = [m for m in messages if m["status"] == "Downloading"]
    assert all(m["progress"].startswith("[") and m["progressDetail"]["total"] for m in downloading)
    # what is not there is an error status before any message
    r = d("pull", f"{name}:nosuchtag")
    assert r.returncode == 1 and r.stderr.startswith(b"Error response from daemon: "), r
    status, body = _request(sampand, "POST", f"/images/create?fromImage={name}&tag=nosuchtag")
    assert status == 404 and json.loads(body)["message"]
    r = d("push", f"{plain_registry.host}/api/notlocal:1")
    assert r.returncode == 1 and b"does not exist locally" in r.stderr, r.stderr
    assert d("rmi", f"{name}:1").returncode == 0


def _auth_header(user: str, password: str, server: str) -> str:
    doc = {"username": user, "password": password, "serveraddress": server}
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()


@needs_registry
def test_login_and_credentials_through_x_registry_auth(sampand, basic_registry, tmp_path):
    d = sampand.docker
    host = basic_registry.host
    r = d("login", "-u", USER, "--password-stdin", host, input=b"wrong\n")
    assert r.returncode == 1 and b"unauthorized" in r.stderr.lower(), r
    c = sampand.client()
    with pytest.raises(APIError) as e:
        c.post("/auth", {"username": USER, "password": "wrong", "serveraddress": host})
    assert e.value.status == 403  # errors.Forbidden: the registry's 401
    assert c.post("/auth", {"username": USER, "password": PASSWORD, "serveraddress": host}) == \
        {"Status": "Login Succeeded", "IdentityToken": ""}
    r = d("login", "-u", USER, "--password-stdin", host, input=PASSWORD.encode() + b"\n")
    assert r.returncode == 0 and b"Login Succeeded" in r.stdout, r
    name = f"{host}/private/bb:1"
    assert d("tag", "busybox", name).returncode == 0
    r = d("push", name)
    assert r.returncode == 0, r.stderr
    assert d("rmi", name).returncode == 0
    r = d("pull", name)
    assert r.returncode == 0, r.stderr
    assert d("rmi", name).returncode == 0
    # without credentials the registry refuses; with them in X-Registry-Auth it serves
    status, body = _request(sampand, "POST", f"/images/create?fromImage={host}/private/bb&tag=1")
    assert status == 403, body
    status, body = _request(sampand, "POST", f"/images/create?fromImage={host}/private/bb&tag=1",
                            headers={"X-Registry-Auth": _auth_header(USER, PASSWORD, host)})
    assert status == 200 and _lines(body)[-1]["status"].startswith("Status: Downloaded newer image"), body
    # docker-py, the same way
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url=sampand.host, version="auto")
    try:
        auth = {"username": USER, "password": PASSWORD}
        assert client.login(USER, PASSWORD, registry=host)["Status"] == "Login Succeeded"
        client.images.get("busybox").tag(f"{host}/private/py", "2")
        pushed = list(client.images.push(f"{host}/private/py", "2", auth_config=auth, stream=True, decode=True))
        assert pushed[-1]["aux"]["Tag"] == "2" and not any("error" in m for m in pushed), pushed
        client.images.remove(f"{host}/private/py:2")
        img = client.images.pull(f"{host}/private/py", "2", auth_config=auth)
        assert f"{host}/private/py:2" in img.tags
        client.images.remove(f"{host}/private/py:2")
    finally:
        client.close()
    assert d("rmi", f"{host}/private/bb:1").returncode == 0


def _eth_address() -> str | None:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        return line.split()[3].split("/")[0]
    return None


@pytest.fixture
def lan_registry(registry_tmp):
    """A plain-HTTP registry on the host's own (non-loopback) address."""
    address = _eth_address()
    if address is None:
        pytest.skip("no non-loopback address to serve a registry on")
    directory = os.path.join(registry_tmp, f"lan-{time.monotonic_ns()}")
    os.makedirs(directory)
    server = RegistryServer(directory)
    port = free_port()
    with open(server.config) as f:
        config = f.read().replace(f"addr: 127.0.0.1:{server.port}", f"addr: {address}:{port}")
    with open(server.config, "w") as f:
        f.write(config)
    server.port, server.host = port, f"{address}:{port}"
    server.start_address = address
    yield _started_on(server, address)
    server.stop()


def _started_on(server: RegistryServer, address: str) -> RegistryServer:
    import socket
    server._log = open(server.log_path, "wb")
    server.proc = subprocess.Popen([REGISTRY_BIN, "serve", server.config], stdout=server._log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, server.port), timeout=0.5):
                return server
        except OSError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError("docker-registry did not start")


def test_info_shows_the_insecure_registries(tmp_path_factory, host_watch):
    """`docker info` lists them as with dockerd: hosts, then CIDRs, loopback always."""
    flagged = start_daemon(tmp_path_factory, ("--insecure-registry", "myreg.example:5000",
                                              "--insecure-registry", "http://10.99.0.0/16"))
    try:
        host_watch.watch_root(os.path.join(flagged.exec_root, "runtime"))
        out = flagged.docker("info", check=True).stdout.decode()
        assert " Insecure Registries:\n  myreg.example:5000\n  10.99.0.0/16\n  127.0.0.0/8\n" in out
        r = flagged.docker("info", "--format", "{{json .RegistryConfig.IndexConfigs}}", check=True)
        assert json.loads(r.stdout) == {
            "docker.io": {"Name": "docker.io", "Mirrors": [], "Secure": True, "Official": True},
            "myreg.example:5000": {"Name": "myreg.example:5000", "Mirrors": [], "Secure": False, "Official": False}}
    finally:
        stop_daemon(flagged)


def test_a_bad_insecure_registry_stops_the_daemon_at_once(tmp_path):
    r = subprocess.run([sys.executable, "-m", "sampan.api", "--root", str(tmp_path / "root"), "--exec-root",
                        str(tmp_path / "exec"), "--insecure-registry", "ftp://reg:5000"],
                       capture_output=True, timeout=30)
    assert r.returncode == 2 and r.stderr.decode().splitlines()[-1] == (
        "sampand: error: --insecure-registry: insecure registry ftp://reg:5000 should not contain '://'")
    assert not (tmp_path / "root").exists() and not (tmp_path / "exec").exists()


@needs_registry
def test_insecure_registry_option(sampand, lan_registry, tmp_path_factory, host_watch):
    name = f"{lan_registry.host}/lan/bb:1"
    # without the option: TLS only, so a plain-HTTP registry off loopback is refused
    assert sampand.docker("tag", "busybox", name).returncode == 0
    r = sampand.docker("push", name)
    assert r.returncode == 1, r
    assert sampand.docker("rmi", name).returncode == 0
    flagged = start_daemon(tmp_path_factory, ("--insecure-registry", lan_registry.host), network="host")
    try:
        host_watch.watch_root(os.path.join(flagged.exec_root, "runtime"))
        assert flagged.docker("tag", "busybox", name).returncode == 0
        r = flagged.docker("push", name)
        assert r.returncode == 0, r.stderr
        assert flagged.docker("rmi", name).returncode == 0
        r = flagged.docker("pull", name)
        assert r.returncode == 0 and b"Downloaded newer image" in r.stdout, r.stderr
    finally:
        stop_daemon(flagged)


# ------------------------------------------------------------------ the other verbs
def test_tag_rmi_prune_history_inspect_and_image_events(sampand):
    d = sampand.docker
    since = time.time() - 1
    assert d("tag", "busybox", "verbs:1").returncode == 0
    assert d("tag", "busybox", "verbs:2").returncode == 0
    r = d("image", "inspect", "-f", "{{json .RepoTags}}", "verbs:1")
    assert {"busybox:latest", "verbs:1", "verbs:2"} <= set(json.loads(r.stdout))
    r = d("history", "-q", "verbs:1")
    assert r.returncode == 0 and r.stdout.split()[0].decode() in d("image", "inspect", "-f", "{{.Id}}",
                                                                     "busybox").stdout.decode()
    r = d("rmi", "verbs:1", "verbs:2")
    assert r.returncode == 0 and r.stdout.decode().split() == ["Untagged:", "verbs:1", "Untagged:", "verbs:2"]
    r = d("rmi", "verbs:1")
    assert r.returncode == 1 and b"No such image" in r.stderr
    # an image of no tag, then pruned
    r = d("import", "-", input=_rootfs_tar())
    dangling = r.stdout.strip().decode()
    r = d("images", "-q", "--no-trunc", "--filter", "dangling=true")
    assert dangling in r.stdout.decode().split()
    r = d("image", "prune", "-f")
    assert r.returncode == 0 and f"deleted: {dangling}" in r.stdout.decode(), r.stdout
    assert dangling not in d("images", "-q", "--no-trunc", "-a").stdout.decode().split()
    events = list(sampand.client().json_lines("GET", "/events", {
        "since": f"{since:.3f}", "until": f"{time.time() + 0.5:.3f}", "filters": json.dumps({"type": ["image"]})}))
    actions = [(e["Action"], e["Actor"]["Attributes"].get("name")) for e in events]
    assert ("tag", "verbs:1") in actions and ("untag", "verbs:1") in actions
    assert ("import", dangling) in actions and ("delete", dangling) in actions


def test_docker_py_save_load_and_import(sampand):
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url=sampand.host, version="auto")
    try:
        data = b"".join(client.images.get("busybox").save(named=True))
        loaded = client.images.load(data)
        assert ["busybox:latest"] in [i.tags for i in loaded]
        out = client.api.import_image_from_data(_rootfs_tar(), repository="pyimported", tag="1",
                                                changes=['CMD ["echo", "from py"]'])
        image_id = json.loads(out)["status"]
        img = client.images.get("pyimported:1")
        assert img.id == image_id and img.attrs["Config"]["Cmd"] == ["echo", "from py"]
        assert client.containers.run("pyimported:1", remove=True) == b"from py\n"
        with pytest.raises(docker.errors.APIError) as e:
            client.api.import_image_from_data(_rootfs_tar(), repository="pybad", changes=["NOPE x"])
        assert e.value.status_code == 400
        client.images.remove("pyimported:1")
        with pytest.raises(docker.errors.ImageNotFound):
            client.images.get("pyimported:1")
    finally:
        client.close()
