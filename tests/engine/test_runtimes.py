"""HostConfig.Runtime: a container through runc (an external OCI runtime added by path, as
dockerd's --add-runtime) via the engine and the supervisor: output and logs, exit code,
exec, pause/unpause, top, kill, remove; nothing left in runc's --root."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import time

import pytest

RUNC = shutil.which("runc") or "/usr/sbin/runc"
pytestmark = pytest.mark.skipif(not os.access(RUNC, os.X_OK), reason="runc is not installed")


def _read_all(sock: socket.socket) -> bytes:
    sock.settimeout(20)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _demux(data: bytes) -> tuple[bytes, bytes]:
    out = {1: b"", 2: b""}
    i = 0
    while i < len(data):
        length = int.from_bytes(data[i + 4:i + 8], "big")
        out[data[i]] += data[i + 8:i + 8 + length]
        i += 8 + length
    return out[1], out[2]


@pytest.fixture
def runc_engine(roots, host_watch, engine_netns):
    from sampan.engine.containers import Engine
    root, exec_root = roots
    eng = Engine(root, exec_root, runtimes={"runc": {"path": RUNC}}, network_namespace=engine_netns)
    _conftest("engine").add_busybox(eng.images)
    runc_root = os.path.join(exec_root, "runtimes", "runc")
    host_watch.watch_root(runc_root)
    yield eng, runc_root, host_watch
    for rec in eng.store.all():
        eng.remove(rec["id"], force=True, volumes=True)
    eng.close()
    try:
        pid = int(open(os.path.join(exec_root, "supervisor.pid")).read().strip())
        os.kill(pid, signal.SIGTERM)
        for _ in range(200):
            os.kill(pid, 0)
            time.sleep(0.02)
    except (OSError, ValueError):
        pass
    shutil.rmtree(exec_root, ignore_errors=True)


def test_run_through_runc(runc_engine):
    eng, runc_root, watch = runc_engine
    cid = eng.create({"Image": "busybox", "Cmd": ["sh", "-c", "echo out; echo err >&2; exit 3"],
                      "HostConfig": {"Runtime": "runc"}})
    watch.watch_id(cid)
    assert eng.inspect(cid)["HostConfig"]["Runtime"] == "runc"
    eng.start(cid)
    assert eng.wait(cid, timeout=20)["StatusCode"] == 3
    assert b"".join(d for _, d in eng.logs(cid, stderr=False)) == b"out\n"
    assert b"".join(d for _, d in eng.logs(cid, stdout=False)) == b"err\n"
    eng.remove(cid)
    assert not os.path.exists(os.path.join(runc_root, cid))


def test_exec_pause_top_kill_through_runc(runc_engine):
    eng, runc_root, watch = runc_engine
    cid = eng.create({"Image": "busybox", "Cmd": ["sleep", "1000"], "HostConfig": {"Runtime": "runc"}})
    watch.watch_id(cid)
    eng.start(cid)
    assert os.path.isdir(os.path.join(runc_root, cid))
    eid = eng.exec_create(cid, {"Cmd": ["sh", "-c", "echo in; echo warn >&2; exit 5"],
                                "AttachStdout": True, "AttachStderr": True})
    sock = eng.exec_start(eid)
    assert _demux(_read_all(sock)) == (b"in\n", b"warn\n")
    sock.close()
    assert eng.exec_wait(eid, 10) == 5
    eid = eng.exec_create(cid, {"Cmd": ["nonexistent-binary"], "AttachStdout": True})
    sock = eng.exec_start(eid)
    assert b"nonexistent-binary" in _read_all(sock)
    sock.close()
    assert eng.exec_inspect(eid)["ExitCode"] == 127
    assert any("sleep" in " ".join(p) for p in eng.top(cid)["Processes"])
    eng.pause(cid)
    assert eng.inspect(cid)["State"]["Paused"] is True
    eng.unpause(cid)
    eng.kill(cid, "KILL")
    assert eng.wait(cid, timeout=20)["StatusCode"] == 137
    eng.remove(cid)
    assert not os.path.exists(os.path.join(runc_root, cid))


def test_unknown_runtime_refused_at_create(runc_engine):
    eng, _, _ = runc_engine
    from sampan.engine.errors import InvalidParameter
    with pytest.raises(InvalidParameter, match="nosuch"):
        eng.create({"Image": "busybox", "Cmd": ["true"], "HostConfig": {"Runtime": "nosuch"}})


def _conftest(area: str):
    """tests/<area>/conftest.py as a module of its own (every area's is named conftest)."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / area / "conftest.py"
    spec = importlib.util.spec_from_file_location(f"_{area}_conftest", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_docker_cli_runtime_runc_through_sampand(tmp_path_factory, host_watch):
    """sampand --add-runtime runc=PATH; docker run --runtime runc, as with dockerd."""
    import subprocess
    api = _conftest("api")
    d = api.start_daemon(tmp_path_factory, ("--add-runtime", f"runc={RUNC}"))
    host_watch.watch_root(os.path.join(d.exec_root, "runtimes", "runc"))
    try:
        def docker(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([api.DOCKER, *args], env=d.env, capture_output=True, timeout=60)
        got = docker("run", "--rm", "--runtime", "runc", "busybox", "sh", "-c", "echo hi; echo err >&2; exit 3")
        assert (got.returncode, got.stdout, got.stderr) == (3, b"hi\n", b"err\n")
        cid = docker("run", "-d", "--runtime", "runc", "busybox", "sleep", "1000").stdout.decode().strip()
        host_watch.watch_id(cid)
        assert docker("inspect", "-f", "{{.HostConfig.Runtime}}", cid).stdout.strip() == b"runc"
        assert docker("exec", cid, "sh", "-c", "exit 4").returncode == 4
        assert docker("exec", cid, "nonexistent-binary").returncode == 127
        assert docker("pause", cid).returncode == 0
        assert docker("inspect", "-f", "{{.State.Status}}", cid).stdout.strip() == b"paused"
        assert docker("unpause", cid).returncode == 0
        assert docker("rm", "-f", cid).returncode == 0
        assert not os.path.exists(os.path.join(d.exec_root, "runtimes", "runc", cid))
        got = docker("run", "--rm", "--runtime", "nosuch", "busybox", "true")
        assert got.returncode == 125 and b"nosuch" in got.stderr
    finally:
        api.stop_daemon(d)
