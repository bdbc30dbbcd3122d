"""sampand through raw HTTP, the real docker CLI, docker-py and the sampan CLI."""
from __future__ import annotations

import concurrent.futures
import json
import signal
import socket
import subprocess
import time

import pytest

from sampan.cli.client import APIError, _sock_chunks
from sampan.stdcopy import demux

from private_daemons import SAMPAN, in_netns




# ------------------------------------------------------------------ plumbing
def test_ping_version_and_negotiation(sampand):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sampand.sock)
    s.sendall(b"HEAD /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        head += chunk
    s.close()
    assert head.startswith(b"HTTP/1.1 200")
    assert b"Api-Version: 1.45" in head
    c = sampand.client()
    v = c.get("/version")
    assert v["ApiVersion"] == "1.45" and v["MinAPIVersion"] == "1.24"
    assert c.call("GET", "/info")["Images"] >= 1
    # with and without the version prefix; too new a version is refused
    from sampan.cli.client import _UnixConnection
    for path, status in (("/version", 200), ("/v1.24/version", 200), ("/v1.99/version", 400),
                         ("/v1.12/version", 400), ("/v1.45/nosuchthing", 404)):
        conn = _UnixConnection(sampand.sock)
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read()
        assert r.status == status, (path, body)
        if status >= 400:
            assert r.getheader("Content-Type") == "application/json"
            assert json.loads(body)["message"]


def test_errors_are_docker_json(sampand):
    c = sampand.client()
    with pytest.raises(APIError) as e:
        c.get("/containers/nosuch/json")
    assert e.value.status == 404 and "No such container: nosuch" in e.value.message
    with pytest.raises(APIError) as e:
        c.get("/images/nosuch:latest/json")
    assert e.value.status == 404
    with pytest.raises(APIError) as e:
        c.post("/containers/create", {"Image": "nosuchimage"})
    assert e.value.status == 404
    cid = c.call("POST", "/containers/create", {"name": "dup"}, {"Image": "busybox", "Cmd": ["true"]})["Id"]
    with pytest.raises(APIError) as e:
        c.call("POST", "/containers/create", {"name": "dup"}, {"Image": "busybox", "Cmd": ["true"]})
    assert e.value.status == 409 and "already in use" in e.value.message
    with pytest.raises(APIError) as e:
        c.call("POST", f"/containers/{cid}/wait", {"condition": "bogus"})
    assert e.value.status == 400
    with pytest.raises(APIError) as e:
        c.call("POST", "/containers/create", None, b"{not json")
    assert e.value.status == 400
    with pytest.raises(APIError) as e:  # a bad reference is invalid, not an internal error
        c.call("POST", "/images/busybox/tag", {"repo": "Not/Lower"})
    assert e.value.status == 400 and "invalid reference format" in e.value.message
    with pytest.raises(APIError) as e:  # in use by a container: a conflict
        c.delete("/images/busybox")
    assert e.value.status == 409 and "conflict" in e.value.message
    c.delete(f"/containers/{cid}")
    # a start of a running container is "not modified": 304 and no body
    from sampan.cli.client import _UnixConnection
    cid = c.post("/containers/create", {"Image": "busybox", "Cmd": ["sleep", "30"]})["Id"]
    c.post(f"/containers/{cid}/start")
    conn = _UnixConnection(sampand.sock)
    conn.request("POST", f"/v1.45/containers/{cid}/start")
    r = conn.getresponse()
    assert r.status == 304 and r.read() == b""
    conn.close()
    c.delete(f"/containers/{cid}", force=1)


def test_hijacked_attach_and_exec_framing(sampand):
    c = sampand.client()
    cid = c.post("/containers/create", {"Image": "busybox", "Cmd": ["sh", "-c", "cat; echo done >&2"],
                                        "OpenStdin": True, "StdinOnce": True})["Id"]
    sock, first = c.hijack(f"/containers/{cid}/attach", {"stream": 1, "stdin": 1, "stdout": 1, "stderr": 1})
    c.post(f"/containers/{cid}/start")
    sock.sendall(b"hello\n")
    sock.shutdown(socket.SHUT_WR)
    frames = list(demux(_sock_chunks(sock, first)))
    sock.close()
    assert (1, b"hello\n") in frames and (2, b"done\n") in frames
    assert c.post(f"/containers/{cid}/wait")["StatusCode"] == 0
    # exec on a running container
    c.post(f"/containers/{cid}/start")
    cid2 = c.post("/containers/create", {"Image": "busybox", "Cmd": ["sleep", "30"]})["Id"]
    c.post(f"/containers/{cid2}/start")
    eid = c.post(f"/containers/{cid2}/exec", {"Cmd": ["sh", "-c", "echo out; echo err >&2; exit 3"],
                                             "AttachStdout": True, "AttachStderr": True})["Id"]
    sock, first = c.hijack(f"/exec/{eid}/start", None, {"Detach": False, "Tty": False})
    frames = list(demux(_sock_chunks(sock, first)))
    sock.close()
    assert frames == [(1, b"out\n"), (2, b"err\n")] or sorted(frames) == [(1, b"out\n"), (2, b"err\n")]
    for _ in range(100):
        info = c.get(f"/exec/{eid}/json")
        if info["ExitCode"] is not None:
            break
        time.sleep(0.02)
    assert info["ExitCode"] == 3
    c.call("POST", f"/containers/{cid2}/kill", {"signal": "KILL"})
    assert c.post(f"/containers/{cid2}/wait")["StatusCode"] == 137


def test_stats_in_dockers_shape(sampand):
    c = sampand.client()
    cid = c.post("/containers/create", {"Image": "busybox", "Cmd": ["sleep", "30"]})["Id"]
    c.post(f"/containers/{cid}/start")
    one = c.get(f"/containers/{cid}/stats", stream=0)
    assert one["id"] == cid and one["pids_stats"]["current"] >= 1 and "memory_stats" in one and "cpu_stats" in one
    r = sampand.docker("stats", "--no-stream", "--format", "{{.ID}} {{.PIDs}}", cid)
    assert r.returncode == 0 and r.stdout.split() == [cid[:12].encode(), b"1"], r
    with pytest.raises(APIError) as e:
        c.get("/containers/nosuch/stats", stream=0)
    assert e.value.status == 404


def test_container_prune_with_filters(sampand):
    c = sampand.client()
    keep = c.post("/containers/create", {"Image": "busybox", "Cmd": ["true"], "Labels": {"keep": "1"}})["Id"]
    gone = c.post("/containers/create", {"Image": "busybox", "Cmd": ["true"], "Labels": {"prune": "me"}})["Id"]
    running = c.post("/containers/create", {"Image": "busybox", "Cmd": ["sleep", "30"], "Labels": {"prune": "me"}})["Id"]
    c.post(f"/containers/{running}/start")
    res = c.post("/containers/prune", filters=json.dumps({"label": ["prune=me"]}))
    assert res["ContainersDeleted"] == [gone]
    res = c.post("/containers/prune", filters=json.dumps({"until": ["1"]}))
    assert res["ContainersDeleted"] is None  # nothing made before 1970
    with pytest.raises(APIError) as e:
        c.post("/containers/prune", filters=json.dumps({"bogus": ["x"]}))
    assert e.value.status == 400
    ids = {x["Id"] for x in c.get("/containers/json", all=1)}
    assert keep in ids and running in ids and gone not in ids


def test_docker_container_prune_filters(sampand):
    """`docker container prune --filter` as with dockerd: until, label, label! together; an
    unknown filter or a bad time is a one-line error that removes nothing."""
    def create(*labels: str) -> str:
        args = [a for label in labels for a in ("--label", label)]
        return sampand.docker("create", *args, "busybox", "true", check=True).stdout.decode().strip()

    ab, ab_cd, ab_cd_old, other = create("a=b"), create("a=b", "c=d"), create("a=b", "c=d", "old=1"), create("a=c")
    r = sampand.docker("container", "prune", "-f", "--filter", "foo=bar")
    assert r.returncode == 1 and r.stderr.decode().splitlines() == ["Error response from daemon: invalid filter 'foo'"]
    r = sampand.docker("container", "prune", "-f", "--filter", "until=soon")
    assert r.returncode == 1 and r.stderr.decode().splitlines() == [
        'Error response from daemon: failed to parse value as time or duration: "soon"']
    # made a moment ago: none is older than an hour
    r = sampand.docker("container", "prune", "-f", "--filter", "until=1h", "--filter", "label=a=b", check=True)
    assert r.stdout.decode().splitlines() == ["Total reclaimed space: 0B"]
    r = sampand.docker("container", "prune", "-f", "--filter", "until=-1h", "--filter", "label=a=b",
                       "--filter", "label!=c=d", "--filter", "label!=old", check=True)
    # label! keeps a container only when it has all of them (ab_cd has c=d but not old)
    assert set(r.stdout.decode().split()[2:-4]) == {ab, ab_cd}
    left = set(sampand.docker("ps", "-aq", "--no-trunc", check=True).stdout.decode().split())
    assert {ab_cd_old, other} <= left and not {ab, ab_cd} & left


def test_system_df(sampand):
    df = sampand.client().get("/system/df")
    assert df["LayersSize"] > 0 and any("busybox:latest" in i["RepoTags"] for i in df["Images"])
    r = sampand.docker("system", "df", "--format", "{{.Type}} {{.TotalCount}}")
    assert r.returncode == 0 and b"Images " in r.stdout, r


def test_events_stream(sampand):
    c = sampand.client()
    since = time.time() - 1
    cid = c.post("/containers/create", {"Image": "busybox", "Cmd": ["true"]})["Id"]
    c.post(f"/containers/{cid}/start")
    c.post(f"/containers/{cid}/wait")
    evs = list(c.json_lines("GET", "/events", {"since": f"{since:.3f}", "until": f"{time.time() + 0.5:.3f}"}))
    actions = [e["Action"] for e in evs if e.get("Actor", {}).get("ID") == cid]
    assert "create" in actions and "start" in actions and "die" in actions


# ------------------------------------------------------------------ the docker CLI
def test_docker_cli(sampand):
    d = sampand.docker
    r = d("version", "--format", "{{.Server.APIVersion}}")
    assert r.returncode == 0 and r.stdout.strip() == b"1.45", r.stderr
    r = d("run", "--rm", "busybox", "sh", "-c", "echo hi; echo oops >&2; exit 3")
    assert r.returncode == 3 and r.stdout == b"hi\n" and r.stderr == b"oops\n", r
    r = d("run", "--rm", "-i", "busybox", "cat", input=b"piped\n")
    assert r.returncode == 0 and r.stdout == b"piped\n"
    r = d("run", "-d", "--name", "web", "busybox", "sh", "-c", "echo started; sleep 60")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip().decode()
    r = d("ps", "--format", "{{.ID}} {{.Names}} {{.Status}}")
    assert r.returncode == 0 and f"{cid[:12]} web Up" in r.stdout.decode()
    for _ in range(50):
        r = d("logs", "web")
        if r.stdout:
            break
        time.sleep(0.05)
    assert r.stdout == b"started\n"
    r = d("exec", "web", "sh", "-c", "echo from exec; exit 4")
    assert r.returncode == 4 and r.stdout == b"from exec\n"
    r = d("exec", "-i", "web", "cat", input=b"stdin to exec\n")
    assert r.stdout == b"stdin to exec\n"
    r = d("inspect", "-f", "{{.State.Running}} {{.Name}} {{.Config.Image}}", "web")
    assert r.stdout.strip() == b"true /web busybox", r.stderr
    r = d("stop", "-t", "1", "web")
    assert r.returncode == 0 and r.stdout.strip() == b"web"
    r = d("inspect", "-f", "{{.State.Status}}", "web")
    assert r.stdout.strip() == b"exited"
    assert d("rm", "web").returncode == 0
    r = d("ps", "-a", "-q")
    assert cid[:12].encode() not in r.stdout
    r = d("rm", "nosuch")
    assert r.returncode == 1 and b"No such container" in r.stderr
    r = d("images", "--format", "{{.Repository}}:{{.Tag}}")
    assert b"busybox:latest" in r.stdout.split()
    r = d("image", "inspect", "-f", "{{.Os}}", "busybox")
    assert r.stdout.strip() == b"linux"
    r = d("volume", "create", "vol1")
    assert r.returncode == 0 and r.stdout.strip() == b"vol1"
    assert b"vol1" in d("volume", "ls", "-q").stdout.split()
    r = d("run", "--rm", "-v", "vol1:/data", "busybox", "sh", "-c", "echo kept > /data/f")
    assert r.returncode == 0, r.stderr
    r = d("run", "--rm", "-v", "vol1:/data", "busybox", "cat", "/data/f")
    assert r.stdout == b"kept\n", r.stderr
    assert d("volume", "rm", "vol1").returncode == 0
    r = d("run", "--rm", "busybox", "nosuchcommand")
    assert r.returncode == 127, r


def test_docker_save_and_load(sampand, tmp_path):
    d = sampand.docker
    tar = str(tmp_path / "bb.tar")
    r = d("save", "-o", tar, "busybox")
    assert r.returncode == 0, r.stderr
    assert d("tag", "busybox", "copy:1").returncode == 0
    assert d("rmi", "copy:1").returncode == 0
    r = d("load", "-i", tar)
    assert r.returncode == 0 and b"Loaded image: busybox:latest" in r.stdout, r


# ------------------------------------------------------------------ docker-py
def test_docker_py(sampand):
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url=sampand.host, version="auto")
    try:
        assert client.ping()
        out = client.containers.run("busybox", ["echo", "hello"], remove=True)
        assert out == b"hello\n"
        ct = client.containers.run("busybox", ["sh", "-c", "echo up; sleep 60"], detach=True, name="pyct")
        assert any(c.id == ct.id for c in client.containers.list())
        for _ in range(50):
            if ct.logs():
                break
            time.sleep(0.05)
        assert ct.logs() == b"up\n"
        code, out = ct.exec_run(["sh", "-c", "echo ex; exit 2"])
        assert code == 2 and out == b"ex\n"
        ct.stop(timeout=1)
        ct.reload()
        assert ct.status == "exited"
        ct.remove()
        assert not any(c.id == ct.id for c in client.containers.list(all=True))
        assert any("busybox:latest" in i.tags for i in client.images.list())
        v = client.volumes.create("pyvol")
        assert v.name == "pyvol" and any(x.name == "pyvol" for x in client.volumes.list())
        v.remove()
        with pytest.raises(docker.errors.NotFound):
            client.containers.get("nosuch")
    finally:
        client.close()


# ------------------------------------------------------------------ the sampan CLI
def test_sampan_cli_run_and_exit_codes(sampand):
    s = sampand.sampan
    r = s("run", "--rm", "busybox", "echo", "hi")
    assert r.returncode == 0 and r.stdout == b"hi\n", r
    r = s("run", "--rm", "busybox", "sh", "-c", "echo e >&2; exit 7")
    assert r.returncode == 7 and r.stderr == b"e\n"
    assert s("run", "--rm", "busybox", "nosuchcommand").returncode == 127
    assert s("run", "--rm", "busybox", "/etc/passwd").returncode == 126
    r = s("run", "--rm", "nosuchimage:1", "true")
    assert r.returncode == 125
    r = s("run", "--rm", "-i", "-e", "A=b", "-w", "/tmp", "busybox", "sh", "-c", 'cat; echo "$A $(pwd)"',
          input=b"in\n")
    assert r.stdout == b"in\nb /tmp\n", r
    r = s("run", "-d", "--name", "cli1", "-l", "k=v", "busybox", "sleep", "60")
    assert r.returncode == 0
    cid = r.stdout.strip().decode()
    r = s("ps", "--format", "{{.Names}} {{.Labels}}")
    assert b"cli1 k=v" in r.stdout
    assert cid[:12].encode() in s("ps", "-q").stdout
    r = s("exec", "cli1", "sh", "-c", "exit 3")
    assert r.returncode == 3
    r = s("inspect", "-f", "{{.State.Status}}", "cli1")
    assert r.stdout.strip() == b"running"
    assert s("rename", "cli1", "cli2").returncode == 0
    assert s("pause", "cli2").returncode == 0
    assert s("unpause", "cli2").returncode == 0
    assert s("kill", "cli2").returncode == 0
    r = s("wait", "cli2")
    assert r.stdout.strip() == b"137"
    r = s("create", "--name", "c3", "busybox", "sh", "-c", "echo again; exit 5")
    assert r.returncode == 0 and len(r.stdout.strip()) == 64
    r = s("start", "-a", "c3", timeout=20)
    assert r.returncode == 5 and r.stdout == b"again\n", r
    assert s("rm", "c3").returncode == 0
    assert s("rm", "-f", "cli2").returncode == 0
    r = s("ps", "-a", "-q")
    assert cid[:12].encode() not in r.stdout
    r = s("volume", "create", "cv")
    assert r.stdout.strip() == b"cv"
    assert b"cv" in s("volume", "ls").stdout
    assert s("volume", "rm", "cv").returncode == 0
    assert s("system", "info").returncode == 0
    assert b"API version" in s("version").stdout


def test_parallel_runs(sampand):
    def one(i: int):
        return sampand.sampan("run", "-d", "--name", f"par{i}", "busybox", "sleep", "60", timeout=120)

    with concurrent.futures.ThreadPoolExecutor(20) as ex:
        results = list(ex.map(one, range(20)))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results if r.returncode]
    ids = {r.stdout.strip().decode() for r in results}
    assert len(ids) == 20
    listed = sampand.client().get("/containers/json")
    running = {c["Id"] for c in listed if c["State"] == "running"}
    assert ids <= running
    names = {c["Names"][0] for c in listed}
    assert {f"/par{i}" for i in range(20)} <= names


def test_daemon_sigkill_loses_nothing(sampand):
    s = sampand.sampan
    r = s("run", "-d", "--name", "survivor", "busybox", "sh", "-c",
          "trap 'exit 0' TERM; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done")
    assert r.returncode == 0, r.stderr
    time.sleep(0.5)
    old = sampand.pid()
    sampand.kill(signal.SIGKILL)
    time.sleep(0.5)
    # the CLI starts a new daemon itself, in the CLI's own network namespace: run it in the old
    # daemon's, or the new one makes its default bridge in the host's
    r = subprocess.run([*in_netns(sampand.netns), *SAMPAN, "ps", "--format", "{{.Names}} {{.State}}"],
                       env=sampand.env, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert b"survivor running" in r.stdout
    assert sampand.pid() != old
    r = s("logs", "survivor")
    lines = r.stdout.decode().split("\n")
    ticks = [int(x.split()[1]) for x in lines if x.startswith("tick")]
    assert len(ticks) >= 8 and ticks == list(range(len(ticks)))  # nothing lost while the daemon was down
    assert s("stop", "-t", "5", "survivor").returncode == 0
    r = s("wait", "survivor")
    assert r.stdout.strip() == b"0"
    assert s("rm", "survivor").returncode == 0
