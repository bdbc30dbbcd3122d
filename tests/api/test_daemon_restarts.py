"""Restart policies across daemon restarts (sampand SIGKILLed, container processes dying while
it is down), `Restarting (1) …` in ps during backoff, and CLIs killed in the middle of `run`."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

PY = sys.executable


def _ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return r.stdout.decode()


def _state(sampand, ref: str) -> dict:
    info = json.loads(_ok(sampand.docker("inspect", ref)))[0]
    return dict(info["State"], RestartCount=info["RestartCount"])


def _until(fn, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def test_restart_policies_across_a_daemon_sigkill(sampand):
    d = sampand.docker
    loop = "trap 'exit 0' TERM; while true; do sleep 0.1; done"
    for name, policy in (("always", "always"), ("unless", "unless-stopped"), ("stopped", "unless-stopped"),
                         ("always-stopped", "always"), ("plain", "no")):
        _ok(d("run", "-d", "--name", name, "--restart", policy, "busybox", "sh", "-c", loop))
    # on-failure:3, failing after a second each time
    _ok(d("run", "-d", "--name", "onfail", "--restart", "on-failure:3", "busybox", "sh", "-c", "sleep 1; exit 3"))
    _ok(d("stop", "stopped", "always-stopped"))
    _until(lambda: _state(sampand, "onfail")["RestartCount"] == 1 and _state(sampand, "onfail")["Running"],
           20, "onfail's first restart")
    pids = {n: _state(sampand, n)["Pid"] for n in ("always", "unless", "plain")}

    sampand.kill(signal.SIGKILL)
    # while the daemon is down, the containers' processes die (the supervisor records it)
    for pid in pids.values():
        os.kill(pid, signal.SIGKILL)
    _until(lambda: not any(_alive(p) for p in pids.values()), 10, "the killed processes")
    time.sleep(1.5)   # onfail fails once more meanwhile
    sampand.start()

    for n in ("always", "unless"):
        st = _until(lambda: (lambda s: s if s["Running"] and s["Pid"] not in (0, pids[n]) else None)(
            _state(sampand, n)), 20, f"{n} to come back")
        assert st["Status"] == "running" and st["RestartCount"] == 1, st
    st = _state(sampand, "plain")
    assert st["Status"] == "exited" and st["ExitCode"] == 137 and st["RestartCount"] == 0, st
    st = _state(sampand, "stopped")
    assert st["Status"] == "exited" and st["RestartCount"] == 0      # unless-stopped, stopped: stays so
    st = _state(sampand, "always-stopped")
    assert st["Running"], st                                          # always: started with the daemon
    # on-failure:3 went on counting from where it was: three restarts in all, then it stays down
    st = _until(lambda: (lambda s: s if s["Status"] == "exited" and s["RestartCount"] == 3 else None)(
        _state(sampand, "onfail")), 30, "onfail to use up its retries")
    time.sleep(1.5)
    st = _state(sampand, "onfail")
    assert st["Status"] == "exited" and st["RestartCount"] == 3 and st["ExitCode"] == 3, st
    rows = _ok(d("ps", "--format", "{{.Names}} {{.State}}")).splitlines()
    assert sorted(rows) == ["always running", "always-stopped running", "unless running"], rows

    # a second daemon restart without anything dying: running containers are simply kept
    before = {n: _state(sampand, n)["Pid"] for n in ("always", "unless")}
    sampand.kill(signal.SIGKILL)
    sampand.start()
    assert {n: _state(sampand, n)["Pid"] for n in ("always", "unless")} == before
    # after an explicit stop, unless-stopped stays stopped across a restart, always does not
    _ok(d("stop", "unless", "always"))
    sampand.kill(signal.SIGKILL)
    sampand.start()
    assert _state(sampand, "unless")["Status"] == "exited"
    assert _until(lambda: _state(sampand, "always")["Running"], 10, "always to start with the daemon")


def test_docker_wait_ends_at_an_exit_a_restart_follows(sampand):
    """As dockerd: `docker wait` (not-running) answers the first exit of a container that
    restarts (always), not the stop that may never come."""
    d = sampand.docker
    cid = _ok(d("run", "-d", "--restart", "always", "busybox", "sh", "-c", "sleep 1; exit 3")).strip()
    r = d("wait", cid, timeout=10)
    assert r.returncode == 0 and r.stdout == b"3\n", r
    _ok(d("rm", "-f", cid))


def test_ps_shows_restarting_during_backoff(sampand):
    d = sampand.docker
    cid = _ok(d("run", "-d", "--restart", "always", "busybox", "sh", "-c", "exit 1")).strip()
    seen = _until(lambda: [s for s in _ok(d("ps", "--format", "{{.ID}}|{{.Status}}|{{.State}}")).splitlines()
                           if s.startswith(cid[:12]) and "|Restarting (1) " in s and s.endswith("|restarting")],
                  30, "ps to show Restarting (1)")
    assert seen[0].split("|")[1].endswith(" ago"), seen
    # inspect agrees, and the count goes up with each restart (the backoff doubles each time)
    st = _until(lambda: (lambda s: s if s["Restarting"] and s["RestartCount"] >= 3 else None)(
        _state(sampand, cid)), 30, "inspect to show Restarting after a few restarts")
    assert st["Status"] == "restarting" and st["Running"] and st["ExitCode"] == 1, st
    # stop ends the backoff: the container stays down
    _ok(d("stop", cid))
    time.sleep(0.5)
    st = _state(sampand, cid)
    assert st["Status"] == "exited" and not st["Restarting"]
    _ok(d("rm", cid))


# ------------------------------------------------------------------ CLIs killed mid-run
def _raw(sampand, request: bytes, read: bool) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.connect(sampand.sock)
    s.sendall(request)
    if read:
        s.settimeout(30)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return s


def _post(path: str, body: dict | None = None) -> bytes:
    data = json.dumps(body).encode() if body is not None else b""
    return (f"POST /v1.45{path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


def _attach_req(cid: str) -> bytes:
    return (f"POST /v1.45/containers/{cid}/attach?stream=1&stdin=1&stdout=1&stderr=1 HTTP/1.1\r\nHost: x\r\n"
            "Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n").encode()


def test_killed_cli_mid_run_leaves_nothing_uncleanable(sampand, host_watch):
    c = sampand.client()
    body = {"Image": "busybox", "Cmd": ["sh", "-c", "echo hi; sleep 30"], "OpenStdin": True, "StdinOnce": True,
            "AttachStdin": True, "AttachStdout": True, "AttachStderr": True}
    # 1. a client that goes away at each step of run (create / attach / start), as a killed CLI does
    s = _raw(sampand, _post("/containers/create?name=gone-create", body), read=False)
    s.close()                                          # gone while create runs
    cid = c.call("POST", "/containers/create", {"name": "gone-attach"}, body)["Id"]
    _raw(sampand, _attach_req(cid), read=True).close()  # gone once attached (the init waits for start)
    cid = c.call("POST", "/containers/create", {"name": "gone-start"}, dict(body, HostConfig={"AutoRemove": True}))["Id"]
    a = _raw(sampand, _attach_req(cid), read=True)
    s = _raw(sampand, _post(f"/containers/{cid}/start"), read=False)
    a.close()
    s.close()                                          # gone while start runs
    # 2. the real CLI SIGKILLed at various moments of `sampan run` (it takes some 60 ms in all)
    for i, delay in enumerate((0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.07, 0.1, 0.2)):
        for rm in ((), ("--rm",)):
            p = subprocess.Popen([PY, "-m", "sampan.cli.main", "run", *rm, "-i", "--name", f"killed{i}{len(rm)}",
                                  "busybox", "sh", "-c", "echo hi; sleep 30"], env=sampand.env,
                                 stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(delay)
            p.kill()
            p.wait()
    time.sleep(1.0)   # requests still in flight in the daemon finish

    r = sampand.sampan("ps", "-a", "-q", "--no-trunc")
    ids = _ok(r).split()
    assert ids, "nothing was made at all?"
    for cid in ids:
        host_watch.watch_id(cid)
    r = sampand.sampan("rm", "-f", *ids)
    assert r.returncode == 0, r
    assert _ok(sampand.sampan("ps", "-a", "-q")) == ""
    # nothing left behind: no container directory, nothing in the supervisor, no rootfs mounted
    assert os.listdir(os.path.join(sampand.root, "containers")) == []
    from sampan.supervisor.client import Client
    with Client(sampand.exec_root) as sup:
        assert sup.call("list")["containers"] == []
    mounts = open("/proc/self/mountinfo").read()
    assert sampand.root not in mounts
    # and the daemon is fine
    assert _ok(sampand.sampan("run", "--rm", "busybox", "echo", "ok")) == "ok\n"


def test_always_comes_back_when_the_supervisor_died_too(sampand):
    """The worst case: sampand and the supervisor SIGKILLed (the container's process lives on,
    orphaned, its stdio gone). The new daemon finds no record of an exit, takes the container
    for dead (255), clears what the runtime still holds (the orphan included) and restarts it."""
    d = sampand.docker
    cid = _ok(d("run", "-d", "--restart", "always", "busybox", "sh", "-c", "echo up; exec sleep 300")).strip()
    old_pid = _state(sampand, cid)["Pid"]
    sup_pid = int(open(os.path.join(sampand.exec_root, "supervisor.pid")).read())
    sampand.kill(signal.SIGKILL)
    os.kill(sup_pid, signal.SIGKILL)
    _until(lambda: not _alive(sup_pid), 10, "the supervisor to die")
    assert _alive(old_pid)
    sampand.start()
    st = _until(lambda: (lambda s: s if s["Running"] and s["Pid"] not in (0, old_pid) else None)(
        _state(sampand, cid)), 20, "the container to come back")
    assert st["RestartCount"] == 1
    _until(lambda: not _alive(old_pid), 10, "the orphan to be cleared")
    assert _until(lambda: _ok(d("logs", cid)) == "up\nup\n", 10, "the second run's output")
    _ok(d("rm", "-f", cid))


def test_a_second_daemon_on_the_same_roots_refuses_before_touching_them(sampand, tmp_path):
    """A sampand started beside a running one (same root or same exec root) stops with one
    line before its start-up reconcile, which would tear down the first one's networks and
    state: the running container keeps running, with its address."""
    cid = _ok(sampand.docker("run", "-d", "busybox", "sleep", "60")).strip()
    before = _ok(sampand.docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", cid))
    other_root, other_exec_root = str(tmp_path / "root"), str(tmp_path / "exec")
    for root, exec_root, held in ((sampand.root, other_exec_root, sampand.root),
                                  (other_root, sampand.exec_root, sampand.exec_root)):
        r = subprocess.run([PY, "-m", "sampan.api", "--root", root, "--exec-root", exec_root],
                           capture_output=True, timeout=60)
        assert r.returncode != 0 and r.stderr.decode().splitlines() == \
            [f"sampand: another sampand is running on {held}"], r.stderr
    assert os.listdir(other_exec_root) == [] and os.listdir(other_root) == ["sampand.lock"]
    assert _state(sampand, cid)["Running"]
    assert _ok(sampand.docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", cid)) == before
