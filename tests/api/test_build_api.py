"""POST /build and /build/prune as raw HTTP against a real sampand: the body a context tar,
the answer dockerd's JSON stream; the image's config and history, cache hits on a rebuild,
a failing RUN (its exit code in errorDetail) and a malformed Dockerfile (a 400 naming the
line) leaving nothing behind: no container, no snapshot directory, no mount, no context."""
from __future__ import annotations

import io
import json
import base64
import os
import sys
import tarfile
import time
import urllib.parse

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "image"))
from registry_fixtures import PASSWORD, USER, basic_registry, needs_registry, registry_tmp  # noqa: E402,F401

from conftest import start_daemon, stop_daemon  # noqa: E402
from sampan.cli.client import _UnixConnection  # noqa: E402
from sampan.image.snapshots import mountpoints  # noqa: E402


def _context(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
            tf.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _post(sampand, path: str, body: bytes = b"", headers: dict | None = None, **query) -> tuple[int, list[dict], bytes]:
    params = urllib.parse.urlencode([(k, v) for k, vs in query.items() for v in (vs if isinstance(vs, list) else [vs])])
    conn = _UnixConnection(sampand.sock)
    conn.request("POST", f"{path}?{params}", body=body, headers={"Content-Type": "application/x-tar", **(headers or {})})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    lines = [json.loads(x) for x in data.splitlines() if x.strip()] if r.status == 200 else []
    return r.status, lines, data


def _stream(lines: list[dict]) -> str:
    return "".join(m.get("stream", "") for m in lines)


def _nothing_left(sampand) -> None:
    assert sampand.client().get("/containers/json", all=1) == []
    containers = os.path.join(sampand.root, "containers")
    assert not os.path.isdir(containers) or os.listdir(containers) == []
    assert os.listdir(os.path.join(sampand.root, "build-contexts")) == []
    assert not [m for m in mountpoints() if m.startswith(sampand.root)]


DOCKERFILE = b"""FROM busybox
ARG V=1
ENV A=b
COPY app.txt /srv/
RUN echo built-$V > /srv/out && cat /srv/app.txt
RUN true
CMD ["cat", "/srv/out"]
"""


def test_build_stream_image_and_cache(sampand):
    body = _context({"Dockerfile": DOCKERFILE, "app.txt": b"app\n"})
    status, lines, _ = _post(sampand, "/build", body, t=["api-built:1", "api-built:2"],
                             buildargs=json.dumps({"V": "7"}))
    assert status == 200
    out = _stream(lines)
    image_id = next(m["aux"]["ID"] for m in lines if "aux" in m)
    assert out.startswith("Step 1/7 : FROM busybox\n ---> ")
    assert " ---> Running in " in out and "app\n" in out and "Removing intermediate container " in out
    assert out.endswith(f"Successfully built {image_id[7:19]}\nSuccessfully tagged api-built:1\n"
                        "Successfully tagged api-built:2\n")
    assert not [m for m in lines if "error" in m]
    client = sampand.client()
    inspect = client.get("/images/api-built:2/json")
    assert inspect["Id"] == image_id and inspect["Config"]["Cmd"] == ["cat", "/srv/out"]
    assert "A=b" in inspect["Config"]["Env"]
    history = [h["CreatedBy"] for h in client.get("/images/api-built:1/history")]
    assert history[:5] == ['/bin/sh -c #(nop)  CMD ["cat" "/srv/out"]', "|1 V=7 /bin/sh -c true",
                           "|1 V=7 /bin/sh -c echo built-$V > /srv/out && cat /srv/app.txt",
                           history[3], "/bin/sh -c #(nop)  ENV A=b"]
    assert history[3].startswith("/bin/sh -c #(nop) COPY file:") and history[3].endswith(" in /srv/ ")
    _nothing_left(sampand)

    started = time.monotonic()
    status, lines, _ = _post(sampand, "/build", body, t="api-built:1", buildargs=json.dumps({"V": "7"}))
    elapsed = time.monotonic() - started
    assert status == 200 and _stream(lines).count(" ---> Using cache\n") == 6
    assert next(m["aux"]["ID"] for m in lines if "aux" in m) == image_id
    assert elapsed < 1.0, f"a cached rebuild through the API took {elapsed:.3f} s"

    # an untagged build's images are the cache's alone: pruned with it; the tagged ones stay
    status, lines, _ = _post(sampand, "/build", _context({"Dockerfile": b"FROM busybox\nRUN echo big > /big\n"}))
    untagged = next(m["aux"]["ID"] for m in lines if "aux" in m)
    cache = client.get("/system/df")["BuildCache"]
    assert len(cache) == 7 and all(c["Type"] == "regular" and c["UsageCount"] >= 1 for c in cache)
    assert sum(c["UsageCount"] for c in cache) == 13
    status, _, data = _post(sampand, "/build/prune")
    assert status == 200
    pruned = json.loads(data)
    assert sorted(pruned["CachesDeleted"]) == sorted(c["ID"] for c in cache) and pruned["SpaceReclaimed"] > 0
    assert client.get("/system/df")["BuildCache"] == []
    assert _post(sampand, f"/images/{untagged}/tag", repo="x")[0] == 404
    assert client.get("/images/api-built:1/json")["Id"] == image_id
    status, lines, _ = _post(sampand, "/build", body, buildargs=json.dumps({"V": "7"}))
    assert status == 200 and "Using cache" not in _stream(lines)
    _nothing_left(sampand)


def test_a_failing_run_is_the_streams_error_and_leaves_nothing(sampand):
    body = _context({"Dockerfile": b"FROM busybox\nRUN echo before\nRUN exit 4\n"})
    status, lines, _ = _post(sampand, "/build", body, t="never")
    assert status == 200
    message = "The command '/bin/sh -c exit 4' returned a non-zero code: 4"
    assert lines[-1] == {"errorDetail": {"code": 4, "message": message}, "error": message}
    assert "before\n" in _stream(lines) and not [m for m in lines if "aux" in m]
    assert sampand.client().get("/images/json", filters=json.dumps({"reference": ["never"]})) == []
    _nothing_left(sampand)


def test_bad_requests_are_refused_before_the_stream(sampand):
    status, _, data = _post(sampand, "/build", _context({"Dockerfile": b"FROM busybox\nRUNN x\n"}))
    assert status == 400
    message = json.loads(data)["message"]
    assert "2" in message and "unknown instruction: RUNN" in message
    status, _, data = _post(sampand, "/build", _context({"Dockerfile": b"FROM busybox\n"}), version="2")
    assert status == 400 and "legacy builder" in json.loads(data)["message"]
    status, _, data = _post(sampand, "/build", _context({"Dockerfile": b"FROM busybox\n"}), t="Bad:Tag:")
    assert status == 400 and "invalid reference format" in json.loads(data)["message"]
    status, _, data = _post(sampand, "/build", _context({"other": b"x"}))
    assert status == 400 and "Dockerfile" in json.loads(data)["message"]
    _nothing_left(sampand)


def test_a_client_that_goes_away_cancels_the_build(sampand):
    body = _context({"Dockerfile": b"FROM busybox\nRUN echo started; sleep 60\nRUN echo never\n"})
    conn = _UnixConnection(sampand.sock)
    conn.request("POST", "/build?t=cancelled", body=body, headers={"Content-Type": "application/x-tar"})
    r = conn.getresponse()
    seen = b""
    while b'"started\\n"' not in seen:   # (the RUN's output, not its Step line)
        seen += r.read1(65536)
    conn.close()
    # (the build ends on its own thread: its step killed, then removed, record before files)
    containers = os.path.join(sampand.root, "containers")
    deadline = time.monotonic() + 10
    while (sampand.client().get("/containers/json", all=1) or os.listdir(containers)) and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    _nothing_left(sampand)
    assert sampand.client().get("/images/json", filters=json.dumps({"reference": ["cancelled"]})) == []


@pytest.fixture(scope="module")
def host_daemon(tmp_path_factory):
    """A sampand in the host's network namespace: it reaches the test registry on 127.0.0.1."""
    d = start_daemon(tmp_path_factory, network="host")
    yield d
    stop_daemon(d)


@needs_registry
def test_a_private_base_image_is_pulled_with_x_registry_config(host_daemon, basic_registry):
    host = basic_registry.host
    auth = {"username": USER, "password": PASSWORD, "serveraddress": host}
    push_auth = base64.urlsafe_b64encode(json.dumps(auth).encode()).decode()
    name = f"{host}/private/base"
    assert _post(host_daemon, "/images/busybox/tag", repo=name, tag="1")[0] == 201
    status, lines, _ = _post(host_daemon, f"/images/{name}:1/push", headers={"X-Registry-Auth": push_auth})
    assert status == 200 and not [m for m in lines if "error" in m], lines
    conn = _UnixConnection(host_daemon.sock)
    conn.request("DELETE", f"/images/{name}:1")
    assert conn.getresponse().status == 200
    conn.close()
    body = _context({"Dockerfile": f"FROM {name}:1\nENV FROM_PRIVATE=1\n".encode()})
    status, lines, _ = _post(host_daemon, "/build", body)
    assert status == 200 and "unauthorized" in lines[-1]["error"].lower(), lines
    config = base64.urlsafe_b64encode(json.dumps({f"https://{host}": auth}).encode()).decode()
    status, lines, _ = _post(host_daemon, "/build", body, headers={"X-Registry-Config": config})
    assert status == 200 and not [m for m in lines if "error" in m], lines
    assert any(m.get("status", "").startswith("Status: Downloaded newer image") for m in lines)
    assert "Successfully built" in _stream(lines)
    _nothing_left(host_daemon)


def test_run_steps_get_the_builds_resources(sampand):
    body = _context({"Dockerfile": b"FROM busybox\nRUN cat /sys/fs/cgroup/memory/memory.limit_in_bytes; "
                                   b"df -k /dev/shm | tail -1; ulimit -n\n"})
    status, lines, _ = _post(sampand, "/build", body, memory=str(64 << 20), shmsize=str(8 << 20),
                             ulimits=json.dumps([{"Name": "nofile", "Soft": 512, "Hard": 512}]), nocache="1")
    out = _stream(lines)
    assert status == 200 and "Successfully built" in out, out
    assert f"{64 << 20}\n" in out and " 8192 " in out and "\n512\n" in out
    _nothing_left(sampand)
