"""The supervisor on real containers: lifecycle, logs, attach, exec, tty, OOM, robustness, memory."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest

from sampan.runtime.container import Runtime
from sampan.supervisor.client import Client, SupervisorError, ensure_running
from svhelpers import demux, read_all, wait_until

TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")


def log_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_ping_and_errors_are_replies(sv):
    assert sv.call("ping")["pid"] == sv.pid
    with pytest.raises(SupervisorError) as e:
        sv.call("start", container="nope")
    assert e.value.code == "not_found"
    with pytest.raises(SupervisorError) as e:
        sv.call("frobnicate")
    assert e.value.code == "invalid"
    with pytest.raises(SupervisorError) as e:
        sv.call("create", container="x", bundle="/nonexistent/bundle")
    assert e.value.code in ("invalid", "internal")
    # Garbage on the wire is an error line, not a crash.
    s = socket.socket(socket.AF_UNIX)
    s.connect(os.path.join(sv.exec_root, "supervisor.sock"))
    s.sendall(b"{not json\n[1,2]\n")
    f = s.makefile("rb")
    assert json.loads(f.readline())["code"] == "invalid"
    assert json.loads(f.readline())["code"] == "invalid"
    s.close()
    assert sv.call("ping")["pid"] == sv.pid


def test_create_start_wait_exit_json_and_list_after_reconnect(sv, make_bundle, tmp_path):
    b = make_bundle("c1").sh("echo hi; exit 7")
    cid = sv.new_id()
    pid = sv.call("create", container=cid, bundle=b.write(), log={"path": str(tmp_path / "c1" / "log.json")})["pid"]
    sv.watch.watch_pid(pid)
    assert [c["status"] for c in sv.call("list")["containers"]] == ["created"]
    with pytest.raises(SupervisorError) as e:
        sv.call("create", container=cid, bundle=b.write())
    assert e.value.code == "conflict"
    started = sv.call("start", container=cid)["started_at"]
    assert TIME_RE.match(started)
    got = sv.call("wait", container=cid)
    assert got["exit_code"] == 7 and got["oom_killed"] is False and TIME_RE.match(got["finished_at"])
    record = json.loads((tmp_path / "c1" / "exit.json").read_text())
    assert record == {"exit_code": 7, "oom_killed": False, "finished_at": got["finished_at"]}
    # A new client (as a restarted sampand would) sees the same.
    with Client(sv.exec_root) as other:
        [c] = other.call("list")["containers"]
    assert c == {"container": cid, "pid": pid, "status": "exited", "exit_code": 7, "oom_killed": False,
                 "started_at": started, "finished_at": got["finished_at"], "paused": False, "runtime": "sampan"}
    with pytest.raises(SupervisorError) as e:
        sv.call("start", container=cid)
    assert e.value.code == "conflict"
    sv.call("delete", container=cid)
    assert sv.call("list")["containers"] == []
    assert not os.path.exists(os.path.join(sv.runtime_root, cid))


def test_json_file_log_streams_and_timestamps(sv, make_bundle, tmp_path):
    log = tmp_path / "logs" / "c-json.log"
    b = make_bundle("c").sh("echo out1; echo err1 >&2; echo out2; printf 'no newline'")
    cid = sv.run(b, log={"path": str(log)})
    assert sv.call("wait", container=cid)["exit_code"] == 0
    entries = log_lines(log)
    by_stream = {s: [e["log"] for e in entries if e["stream"] == s] for s in ("stdout", "stderr")}
    assert by_stream == {"stdout": ["out1\n", "out2\n", "no newline"], "stderr": ["err1\n"]}
    for e in entries:
        assert set(e) == {"log", "stream", "time"} and TIME_RE.match(e["time"])
    assert log.read_text().splitlines()[0] == json.dumps(entries[0], separators=(",", ":"))
    sv.call("delete", container=cid)


def test_no_log_line_lost_on_fast_exit(sv, make_bundle, tmp_path):
    log = tmp_path / "fast.log"
    b = make_bundle("c").sh("seq 1 20000")
    cid = sv.run(b, log={"path": str(log)})
    sv.call("wait", container=cid)
    # wait answers only after the output is drained: the log is complete at this point.
    assert [e["log"] for e in log_lines(log)] == [f"{i}\n" for i in range(1, 20001)]
    sv.call("delete", container=cid)


def test_log_rotation_max_size_max_file(sv, make_bundle, tmp_path):
    log = tmp_path / "rot.log"
    b = make_bundle("c").sh("seq 1 3000")
    cid = sv.run(b, log={"path": str(log), "max_size": "4k", "max_file": 3})
    sv.call("wait", container=cid)
    files = sorted(p.name for p in tmp_path.glob("rot.log*"))
    assert files == ["rot.log", "rot.log.1", "rot.log.2"]
    for name in files:
        assert (tmp_path / name).stat().st_size <= 4096
    kept = []
    for name in ("rot.log.2", "rot.log.1", "rot.log"):
        kept += [int(e["log"]) for e in log_lines(tmp_path / name)]
    assert kept == list(range(kept[0], 3001)) and kept[0] > 1  # the newest, contiguous, oldest dropped
    sv.call("delete", container=cid)


def test_default_log_cap(sv, make_bundle, tmp_path):
    from sampan.logs.jsonfile import JsonLog
    j = JsonLog(str(tmp_path / "d.log"))
    assert (j.max_size, j.max_file) == (10 << 20, 3)
    j.close()


def test_attach_multiplexed_with_stdin(sv, make_bundle, tmp_path):
    b = make_bundle("c").sh("echo start; echo warn >&2; cat; echo done")
    cid = sv.run(b, start=False, stdin=True, log={"path": str(tmp_path / "l.log")})
    s = sv.client.attach(container=cid, stdin=True)
    sv.call("start", container=cid)
    s.sendall(b"line one\nline two\n")
    s.shutdown(socket.SHUT_WR)  # closes cat's stdin
    out, err = demux(read_all(s))
    s.close()
    assert out == b"start\nline one\nline two\ndone\n"
    assert err == b"warn\n"
    assert sv.call("wait", container=cid)["exit_code"] == 0
    sv.call("delete", container=cid)


def test_two_attachers(sv, make_bundle, tmp_path):
    b = make_bundle("c").sh("read x; echo got $x; echo bye >&2")
    cid = sv.run(b, start=False, stdin=True)
    a1 = sv.client.attach(container=cid, stdin=True)
    a2 = sv.client.attach(container=cid, stdout=True, stderr=False)
    sv.call("start", container=cid)
    a1.sendall(b"hello\n")
    o1, e1 = demux(read_all(a1))
    o2, e2 = demux(read_all(a2))
    assert (o1, e1) == (b"got hello\n", b"bye\n")
    assert (o2, e2) == (b"got hello\n", b"")
    a1.close()
    a2.close()
    sv.call("delete", container=cid)


def _read_until(sock, marker: bytes, timeout: float = 10) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_tty_attach_raw_and_resize(sv, make_bundle, tmp_path):
    b = make_bundle("c").args("sh")
    b.process["terminal"] = True
    log = tmp_path / "tty.log"
    cid = sv.run(b, start=False, tty=True, stdin=True, console_size=[30, 100], log={"path": str(log)})
    s = sv.client.attach(container=cid, stdin=True)
    sv.call("start", container=cid)
    s.sendall(b'stty size; echo MA""RK1\n')
    data = _read_until(s, b"MARK1\r\n")  # raw bytes: the pty's \r\n, no framing
    assert b"30 100" in data
    sv.call("resize", container=cid, height=40, width=132)
    s.sendall(b'stty size; echo MA""RK2\n')
    assert b"40 132" in _read_until(s, b"MARK2\r\n")
    s.sendall(b"exit 5\n")
    read_all(s)
    s.close()
    assert sv.call("wait", container=cid)["exit_code"] == 5
    assert all(e["stream"] == "stdout" for e in log_lines(log))
    assert "40 132" in "".join(e["log"] for e in log_lines(log))
    sv.call("delete", container=cid)


def test_exec_output_and_exit_code(sv, make_bundle):
    cid = sv.run(make_bundle("c").args("sleep", "1000"))
    # attached on the exec connection itself
    pid, s = sv.client.exec_attached(cid, "e1", {"args": ["sh", "-c", "echo in-exec; echo e >&2; exit 4"],
                                                 "cwd": "/", "env": ["PATH=/bin:/usr/bin"]})
    assert pid > 0
    assert demux(read_all(s)) == (b"in-exec\n", b"e\n")
    s.close()
    assert sv.call("wait", exec_id="e1")["exit_code"] == 4
    # exec first, attach later: the early output is held for the first attacher
    sv.call("exec", container=cid, exec_id="e2", process={"args": ["echo", "early"], "cwd": "/", "env": ["PATH=/bin"]}, stdin=False)
    assert sv.call("wait", exec_id="e2")["exit_code"] == 0
    s = sv.client.attach(exec_id="e2")
    assert demux(read_all(s)) == (b"early\n", b"")
    s.close()
    # exec with stdin through cat, and a tty exec
    pid, s = sv.client.exec_attached(cid, "e3", {"args": ["cat"], "cwd": "/", "env": ["PATH=/bin"]}, stdin=True)
    s.sendall(b"echoed\n")
    s.shutdown(socket.SHUT_WR)
    assert demux(read_all(s)) == (b"echoed\n", b"")
    s.close()
    pid, s = sv.client.exec_attached(cid, "e4", {"args": ["stty", "size"], "cwd": "/", "env": ["PATH=/bin"]}, tty=True,
                                     console_size=[12, 34])
    assert read_all(s).strip() == b"12 34"
    s.close()
    with pytest.raises(SupervisorError) as e:
        sv.call("exec", container=cid, exec_id="e1", process={"args": ["true"]})
    assert e.value.code == "conflict"
    sv.call("delete", container=cid)


def test_kill_and_subscribe(sv, make_bundle):
    events = sv.client.subscribe()
    cid = sv.run(make_bundle("c").args("sleep", "1000"))
    sv.call("kill", container=cid, signal=signal.SIGKILL)
    ev = next(events)
    assert ev["event"] == "exit" and ev["container"] == cid and ev["exit_code"] == 137
    assert TIME_RE.match(ev["time"])
    assert sv.call("wait", container=cid)["exit_code"] == 137
    with pytest.raises(SupervisorError) as e:
        sv.call("kill", container=cid, signal=9)
    assert e.value.code == "conflict"
    events.close()
    sv.call("delete", container=cid)


def test_delete_running_container(sv, make_bundle):
    cid = sv.run(make_bundle("c").args("sleep", "1000"))
    sv.call("delete", container=cid)
    assert sv.call("list")["containers"] == []


def test_oom_killed(sv, make_bundle, tmp_path):
    b = make_bundle("c").args("dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1")
    b.linux.setdefault("resources", {})["memory"] = {"limit": 20 << 20, "swap": 20 << 20}
    cid = sv.run(b)
    got = sv.call("wait", container=cid)
    assert got["exit_code"] == 137 and got["oom_killed"] is True
    assert json.loads((tmp_path / "c" / "exit.json").read_text())["oom_killed"] is True
    [c] = sv.call("list")["containers"]
    assert c["oom_killed"] is True
    sv.call("delete", container=cid)


def test_client_killed_mid_attach_leaves_container_alone(sv, make_bundle, tmp_path):
    log = tmp_path / "chatty.log"
    b = make_bundle("c").sh("i=0; while true; do i=$((i+1)); echo line $i; done")
    cid = sv.run(b, log={"path": str(log), "max_size": "1m", "max_file": 2})
    s = sv.client.attach(container=cid)
    assert s.recv(1000)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # RST on close
    s.close()
    # Another attacher that stops reading entirely: the container is paused by back-pressure,
    # never the supervisor.
    stuck = sv.client.attach(container=cid)
    time.sleep(0.5)
    assert sv.call("ping")["pid"] == sv.pid
    [c] = sv.call("list")["containers"]
    assert c["status"] == "running"
    stuck.close()
    size = log.stat().st_size
    wait_until(lambda: log.stat().st_size != size, 5, what="the log to keep growing")
    sv.call("kill", container=cid, signal=9)
    assert sv.call("wait", container=cid)["exit_code"] == 137
    sv.call("delete", container=cid)


def _zombies(pids) -> list[int]:
    out = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            out.append(pid)
    return out


def _children_of(pid: int) -> list[int]:
    kids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(name))
    return kids


def test_orphans_reparented_to_supervisor_are_reaped(sv, make_bundle):
    # No pid namespace: the init's background child is orphaned to the subreaper, us.
    b = make_bundle("c").sh("sleep 0.3 & echo $!")
    b.linux["namespaces"] = [n for n in b.linux["namespaces"] if n["type"] != "pid"]
    cid = sv.run(b, start=False)
    s = sv.client.attach(container=cid)
    sv.call("start", container=cid)
    orphan = int(demux(read_all(s))[0])
    s.close()
    assert sv.call("wait", container=cid)["exit_code"] == 0
    wait_until(lambda: not os.path.exists(f"/proc/{orphan}"), 5, what="the orphan to be reaped")
    assert _zombies(_children_of(sv.pid)) == []
    sv.call("delete", container=cid)


def test_init_reaps_zombies_of_pid1(sv, make_bundle, shared_rootfs):
    tini = "/usr/bin/tini-static"
    if not os.path.exists(tini):
        pytest.skip("tini is not installed (apt-get install tini)")
    (shared_rootfs / "sbin").mkdir(exist_ok=True)
    (shared_rootfs / "sbin" / "docker-init").touch()
    # sh -c 'sleep 0.1 &' exits at once: its sleep is orphaned to PID 1.
    script = "sh -c 'sleep 0.1 &'; sh -c 'sleep 0.1 &'; sleep 1000"
    with_init = make_bundle("init").args("/sbin/docker-init", "--", "sh", "-c", script)
    with_init.config.setdefault("mounts", []).append(
        {"destination": "/sbin/docker-init", "type": "bind", "source": tini, "options": ["bind", "ro"]})
    plain = make_bundle("plain").args("sh", "-c", script)
    c1 = sv.run(with_init)
    c2 = sv.run(plain)
    pids = {c["container"]: c["pid"] for c in sv.call("list")["containers"]}
    time.sleep(0.6)
    # (zombies leave cgroup.procs: look at the children of each container's PID 1)
    assert _zombies(_children_of(pids[c1])) == []          # tini reaped them
    assert len(_zombies(_children_of(pids[c2]))) == 2      # without --init they stay the container's
    sv.call("delete", container=c1)
    sv.call("delete", container=c2)


def test_sigterm_leaves_containers_running(sv, make_bundle):
    cid = sv.run(make_bundle("c").args("sleep", "1000"))
    [c] = sv.call("list")["containers"]
    sv.client.close()
    os.kill(sv.pid, signal.SIGTERM)
    wait_until(lambda: not sv.alive(), 10, what="the supervisor to exit")
    assert not os.path.exists(os.path.join(sv.exec_root, "supervisor.sock"))
    assert not os.path.exists(os.path.join(sv.exec_root, "supervisor.pid"))
    rt = Runtime(root=sv.runtime_root)
    assert rt.state(cid)["status"] == "running"
    assert os.path.exists(f"/proc/{c['pid']}")
    rt.delete(cid, force=True)


def test_ensure_running_is_idempotent(sv):
    from sampan.supervisor.client import ensure_running
    assert ensure_running(sv.root, sv.exec_root) == sv.pid
    assert int(Path(sv.exec_root, "supervisor.pid").read_text()) == sv.pid


def test_fifty_idle_containers_memory(sv, make_bundle, tmp_path):
    n = 50
    # one container first: the modules create/start/wait import are loaded once, not per container
    warm = sv.run(make_bundle("warm").args("true"))
    sv.call("wait", container=warm)
    sv.call("delete", container=warm)
    before = sv.rss_kib()
    ids = []
    for i in range(n):
        ids.append(sv.run(make_bundle(f"idle{i}").args("sleep", "1000"),
                          log={"path": str(tmp_path / f"idle{i}" / "log.json")}))
    time.sleep(0.5)
    after = sv.rss_kib()
    per = (after - before) / n
    report = tmp_path.parent / "supervisor-rss.txt"
    report.write_text(f"supervisor RSS {before} KiB -> {after} KiB over {n} idle containers: {per:.1f} KiB each\n")
    print(report.read_text())
    assert len([c for c in sv.call("list")["containers"] if c["status"] == "running"]) == n
    assert per <= 1024, f"{per:.0f} KiB per idle container"
    for cid in ids:
        sv.call("delete", container=cid)


def test_container_does_not_inherit_supervisor_signal_dispositions(sv, make_bundle):
    # Python ignores SIGPIPE; an ignored signal survives execve, so the supervisor resets it.
    cid = sv.run(make_bundle("c").args("grep", "-E", "Sig(Ign|Blk)", "/proc/self/status"), start=False)
    s = sv.client.attach(container=cid)
    sv.call("start", container=cid)
    out, _ = demux(read_all(s))
    s.close()
    assert out.split() == [b"SigBlk:", b"0" * 16, b"SigIgn:", b"0" * 16]
    sv.call("delete", container=cid)


def test_exit_recorded_before_the_stream_ends(sv, make_bundle):
    """The ordering the engine relies on: once an exec's (or a container's) attach stream has
    ended, exec_state / list answer its exit, never a stale running/None."""
    cid = sv.run(make_bundle("c").args("sleep", "1000"))
    for n in range(200):
        code = n % 7
        pid, s = sv.client.exec_attached(cid, f"x{n}", {"args": ["sh", "-c", f"echo {n}; exit {code}"], "cwd": "/",
                                                        "env": ["PATH=/bin"]})
        assert demux(read_all(s)) == (b"%d\n" % n, b"")
        s.close()
        state = sv.call("exec_state", exec_id=f"x{n}")
        assert (state["status"], state["exit_code"]) == ("exited", code), n
    sv.call("delete", container=cid)
    for n in range(20):
        other = sv.run(make_bundle(f"r{n}").sh(f"echo hi; exit {n}"), start=False)
        s = sv.client.attach(container=other)
        sv.call("start", container=other)
        assert demux(read_all(s)) == (b"hi\n", b"")
        s.close()
        [c] = sv.call("list")["containers"]
        assert (c["status"], c["exit_code"]) == ("exited", n)
        sv.call("delete", container=other)


def test_subscribe_replays_after_seq_and_reports_gaps(sv, make_bundle):
    first = sv.client.subscribe()
    assert first.gap is False
    ids = [sv.run(make_bundle(f"c{n}").sh(f"exit {n}")) for n in range(3)]
    got = [next(first) for _ in ids]
    assert [e["container"] for e in got] == ids and [e["exit_code"] for e in got] == [0, 1, 2]
    assert [e["seq"] for e in got] == [first.seq + 1, first.seq + 2, first.seq + 3]
    first.close()
    # missed while not subscribed: replayed, in order, before new events
    late = sv.run(make_bundle("late").sh("exit 9"))
    sv.call("wait", container=late)
    again = sv.client.subscribe(after=got[0]["seq"], epoch=first.epoch)
    assert again.gap is False
    assert [e["container"] for e in (next(again), next(again), next(again))] == ids[1:] + [late]
    again.close()
    other = sv.client.subscribe(after=0, epoch=first.epoch + 1)  # another supervisor's numbers
    assert other.gap is True
    other.close()
    for cid in ids + [late]:
        sv.call("delete", container=cid)


def test_exec_that_cannot_start_is_an_exited_exec(sv, make_bundle):
    cid = sv.run(make_bundle("c").args("sleep", "1000"))
    events = sv.client.subscribe()
    pid, s = sv.client.exec_attached(cid, "missing", {"args": ["nope"], "cwd": "/", "env": ["PATH=/bin"]})
    out, err = demux(read_all(s))
    s.close()
    assert pid == 0 and out.startswith(b"OCI runtime exec failed: ") and b"nope" in out and err == b""
    state = sv.call("exec_state", exec_id="missing")
    assert (state["status"], state["exit_code"]) == ("exited", 127) and "nope" in state["error"]
    ev = next(events)
    assert (ev["exec_id"], ev["container"], ev["exit_code"]) == ("missing", cid, 127)
    events.close()
    reply = sv.call("exec", container=cid, exec_id="noexec", detach=True,
                    process={"args": ["/etc/passwd"], "cwd": "/", "env": ["PATH=/bin"]})
    assert (reply["pid"], reply["exit_code"]) == (0, 126) and reply["error"]
    assert sv.call("wait", exec_id="noexec")["exit_code"] == 126
    sv.call("delete", container=cid)


def test_pause_resume_update_pids_stats(sv, make_bundle):
    cid = sv.run(make_bundle("c").args("sleep", "1000"))
    [c] = sv.call("list")["containers"]
    assert sv.call("pids", container=cid)["pids"] == [c["pid"]]
    sv.call("update", container=cid, resources={"pids": {"limit": 40}})
    stats = sv.call("stats", container=cid)["stats"]
    assert stats["pids"] == {"current": 1, "limit": 40}
    sv.call("pause", container=cid)
    assert sv.call("list")["containers"][0]["paused"] is True
    with pytest.raises(SupervisorError) as e:
        sv.call("exec", container=cid, exec_id="p", process={"args": ["true"], "cwd": "/"})
    assert e.value.code == "conflict"
    sv.call("resume", container=cid)
    with pytest.raises(SupervisorError) as e:
        sv.call("resume", container=cid)
    assert e.value.code == "conflict"
    sv.call("pause", container=cid)
    sv.call("delete", container=cid)  # a paused one is thawed and killed
    assert sv.call("list")["containers"] == []
    with pytest.raises(SupervisorError) as e:
        sv.call("pause", container=cid)
    assert e.value.code == "not_found" and e.value.kind == "not_found"


def test_delete_of_a_leftover_only_the_runtime_knows(sv, make_bundle):
    """What an earlier supervisor left (the runtime's state of a container it held)."""
    cid = sv.new_id()
    sv.call("create", container=cid, bundle=make_bundle("c").args("sleep", "1000").write())
    os.kill(sv.pid, signal.SIGTERM)  # leaves the container running, as documented
    wait_until(lambda: not sv.alive(), 10, what="the supervisor to exit")
    sv.pid = ensure_running(sv.root, sv.exec_root)
    sv.watch.watch_pid(sv.pid)
    sv.client.close()
    assert sv.call("list")["containers"] == []
    assert sv.call("delete", container=cid)["leftover"] is True
    assert not os.path.exists(os.path.join(sv.runtime_root, cid))
    with pytest.raises(SupervisorError) as e:
        sv.call("delete", container=cid)
    assert e.value.code == "not_found"
