"""A container through an external OCI runtime (runc, /usr/sbin/runc) via the supervisor:
output, stdin, tty, exit code, exec (with a missing binary), kill, pause/resume, update,
pids, stats, delete; and that nothing is left in runc's --root."""
from __future__ import annotations

import os
import shutil
import signal
import socket

import pytest
from svhelpers import demux, read_all, wait_until

from sampan.supervisor.client import SupervisorError

RUNC = shutil.which("runc") or "/usr/sbin/runc"
pytestmark = pytest.mark.skipif(not os.access(RUNC, os.X_OK), reason="runc is not installed")
ENV = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]


@pytest.fixture
def runc_root(sv):
    root = os.path.join(sv.exec_root, "runtimes", "runc")
    sv.watch.watch_root(root)
    return root


def _runtime(**extra):
    return {"name": "runc", "path": RUNC, **extra}


def test_output_stdin_exit_code_and_log(sv, make_bundle, tmp_path, runc_root):
    log = tmp_path / "c.log"
    b = make_bundle("c").sh("echo out; echo err >&2; read line; echo got $line; exit 3")
    cid = sv.run(b, start=False, stdin=True, runtime=_runtime(), log={"path": str(log)})
    assert os.path.isdir(os.path.join(runc_root, cid))  # its own --root under the exec root
    s = sv.client.attach(container=cid, stdin=True)
    sv.call("start", container=cid)
    s.sendall(b"hello\n")
    s.shutdown(socket.SHUT_WR)
    out, err = demux(read_all(s))
    s.close()
    assert (out, err) == (b"out\ngot hello\n", b"err\n")
    got = sv.call("wait", container=cid)
    assert got["exit_code"] == 3 and got["oom_killed"] is False
    [c] = sv.call("list")["containers"]
    assert c["status"] == "exited" and c["runtime"] == "runc"
    assert b'"got hello\\n"' in log.read_bytes()
    sv.call("delete", container=cid)
    assert not os.path.exists(os.path.join(runc_root, cid))


def test_tty_through_console_socket(sv, make_bundle, runc_root):
    b = make_bundle("c").sh("stty size; echo a")
    b.process["terminal"] = True
    cid = sv.run(b, start=False, tty=True, runtime=_runtime(), console_size=[20, 70])
    s = sv.client.attach(container=cid)
    sv.call("start", container=cid)
    assert read_all(s) == b"20 70\r\na\r\n"  # a real pty: its line discipline makes \r\n
    s.close()
    assert sv.call("wait", container=cid)["exit_code"] == 0
    sv.call("delete", container=cid)


def test_exec_kill_pause_resume_update_pids_stats(sv, make_bundle, runc_root):
    cid = sv.run(make_bundle("c").args("sleep", "1000"), runtime=_runtime())
    proc = {"args": ["sh", "-c", "echo in; echo warn >&2; exit 5"], "cwd": "/", "env": ENV}
    pid, s = sv.client.exec_attached(cid, "e1", proc)
    assert pid > 0 and demux(read_all(s)) == (b"in\n", b"warn\n")
    s.close()
    assert sv.call("wait", exec_id="e1")["exit_code"] == 5
    assert sv.call("exec_state", exec_id="e1")["status"] == "exited"
    pid, s = sv.client.exec_attached(cid, "e2", {"args": ["tty"], "cwd": "/", "env": ENV}, tty=True)
    assert read_all(s).startswith(b"/dev/pts/")
    s.close()
    # a missing binary: not an error of the request, an exec that exits 127 with the message
    pid, s = sv.client.exec_attached(cid, "e3", {"args": ["nope"], "cwd": "/", "env": ENV})
    out, _ = demux(read_all(s))
    s.close()
    assert pid == 0 and b"nope" in out and out.endswith(b"\r\n")
    assert sv.call("exec_state", exec_id="e3")["exit_code"] == 127

    [init] = [c["pid"] for c in sv.call("list")["containers"]]
    assert init in sv.call("pids", container=cid)["pids"]
    sv.call("update", container=cid, resources={"pids": {"limit": 50}})
    stats = sv.call("stats", container=cid)["stats"]
    assert stats["pids"]["limit"] == 50 and stats["pids"]["current"] >= 1
    sv.call("pause", container=cid)
    assert sv.call("list")["containers"][0]["paused"] is True
    with pytest.raises(SupervisorError) as e:
        sv.call("pause", container=cid)
    assert e.value.code == "conflict"
    with pytest.raises(SupervisorError) as e:  # refused, not an exec that "exits 126"
        sv.call("exec", container=cid, exec_id="paused", process={"args": ["true"], "cwd": "/", "env": ENV})
    assert e.value.code == "conflict"
    sv.call("resume", container=cid)
    sv.call("kill", container=cid, signal=int(signal.SIGKILL))  # (sleep as pid 1 ignores SIGTERM)
    assert sv.call("wait", container=cid)["exit_code"] == 137
    sv.call("delete", container=cid)
    assert not os.path.exists(os.path.join(runc_root, cid))


def test_delete_of_a_running_paused_container(sv, make_bundle, runc_root):
    cid = sv.run(make_bundle("c").args("sleep", "1000"), runtime=_runtime())
    sv.call("pause", container=cid)
    sv.call("delete", container=cid)
    assert sv.call("list")["containers"] == []
    assert not os.path.exists(os.path.join(runc_root, cid))


def test_create_failure_is_one_line_and_leaves_nothing(sv, make_bundle, runc_root):
    b = make_bundle("c").args("true")
    b.config["root"]["path"] = "/nonexistent-rootfs"
    with pytest.raises(SupervisorError) as e:
        sv.run(b, runtime=_runtime())
    assert "\n" not in str(e.value) and str(e.value)
    assert sv.call("list")["containers"] == []
    assert not os.listdir(runc_root) if os.path.isdir(runc_root) else True


def test_unknown_runtime_is_invalid(sv, make_bundle):
    with pytest.raises(SupervisorError) as e:
        sv.run(make_bundle("c").args("true"), runtime={"name": "nosuch"})
    assert e.value.code == "invalid" and "nosuch" in str(e.value)
    with pytest.raises(SupervisorError) as e:
        sv.run(make_bundle("d").args("true"), runtime={"name": "gone", "path": "/nonexistent/runc"})
    assert "no such file" in str(e.value)
    assert sv.call("list")["containers"] == []


def test_container_starts_with_default_signal_dispositions(sv, make_bundle, runc_root):
    """The supervisor ignores SIGHUP and SIGPIPE itself; a runtime it runs must not pass that
    on to the container (ignored signals survive execve)."""
    cid = sv.run(make_bundle("c").args("grep", "SigIgn", "/proc/self/status"), start=False, runtime=_runtime())
    s = sv.client.attach(container=cid)
    sv.call("start", container=cid)
    out, _ = demux(read_all(s))
    s.close()
    assert out.split() == [b"SigIgn:", b"0000000000000000"]
    sv.call("delete", container=cid)
