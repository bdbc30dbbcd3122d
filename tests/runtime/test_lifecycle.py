"""Lifecycle and state machine of the runtime's command line: create, start, state, kill,
delete, run, list, ps, and the errors a caller relies on."""
from __future__ import annotations

import json
import os
import signal
import time

import pytest


def _proc_state(pid: int) -> str:
    stat = open(f"/proc/{pid}/stat").read()
    return stat[stat.rindex(")") + 2:].split()[0]


def test_create_start_kill_delete_state_machine(rt, bundle, util):
    bundle.sh("touch /ran; exec sleep 100")
    cid = rt.new_id()
    rt.create(cid, bundle)
    state = rt.state(cid)
    assert {"ociVersion", "id", "pid", "status", "bundle", "rootfs", "created"} <= set(state)
    assert state["status"] == "created"
    assert state["id"] == cid
    assert state["pid"] > 0 and os.path.exists(f"/proc/{state['pid']}")
    assert state["bundle"] == str(bundle.path)
    time.sleep(0.2)
    assert not (bundle.rootfs / "ran").exists(), "the process ran before start"

    rt.start(cid)
    assert rt.state(cid)["status"] == "running"
    util.wait_until(lambda: (bundle.rootfs / "ran").exists(), what="the process to run after start")

    rt.kill(cid, "KILL")
    rt.wait_status(cid, "stopped")
    assert rt.state(cid)["pid"] == 0
    rt.delete(cid)
    r = rt("state", cid)
    assert r.returncode != 0
    assert "does not exist" in r.err
    assert not (rt.root / cid).exists()


def test_create_leaves_the_process_blocked_until_start(rt, bundle, util):
    bundle.sh("echo started-output")
    cid = rt.new_id()
    created = rt.create(cid, bundle)
    pid = rt.state(cid)["pid"]
    time.sleep(0.3)
    assert "started-output" not in created.out
    assert _proc_state(pid) in ("S", "D"), "a created container's process must be blocked, waiting for start"
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        exe = ""
    assert not exe.endswith("busybox"), "the user process was exec'd before start"
    rt.start(cid)
    util.wait_until(lambda: "started-output" in created.out, what="the process's output after start")


def test_run_passes_the_exit_code_through(rt, bundle):
    r = rt.run(bundle.sh("echo out; echo err >&2; exit 7"))
    assert r.returncode == 7
    assert r.out == "out\n"
    assert "err" in r.err


def test_run_detached_returns_while_the_container_runs(rt, bundle):
    cid = rt.new_id()
    r = rt.run(bundle.args("sleep", "100"), "-d", cid=cid)
    assert r.returncode == 0, r
    assert r.elapsed < 10
    assert rt.state(cid)["status"] == "running"


def test_start_twice_fails(rt, bundle):
    cid, _ = rt.started(bundle.args("sleep", "100"))
    r = rt.start(cid, check=False)
    assert r.returncode == 1
    assert "running" in r.err
    assert rt.status(cid) == "running"


def test_start_of_a_stopped_container_fails(rt, bundle):
    cid, _ = rt.started(bundle.args("true"))
    rt.wait_status(cid, "stopped")
    r = rt.start(cid, check=False)
    assert r.returncode == 1
    assert "stopped" in r.err


def test_delete_of_a_running_container_needs_force(rt, bundle, util):
    cid, pid = rt.started(bundle.sh("i=0; while true; do i=$((i+1)); echo $i > /tick; sleep 0.05; done"))
    r = rt.delete(cid, check=False)
    assert r.returncode == 1
    assert f"cannot delete container {cid} that is not stopped: running" in r.err
    assert rt.status(cid) == "running"
    assert os.path.exists(f"/proc/{pid}") and _proc_state(pid) != "Z"
    # Untouched: it goes on running, and takes execs and signals.
    tick = bundle.rootfs / "tick"
    first = util.wait_until(lambda: tick.exists() and tick.read_text().strip(), what="the first tick")
    util.wait_until(lambda: tick.read_text().strip() not in ("", first), what="the container to go on")
    assert rt.exec(cid, "true").returncode == 0
    rt.kill(cid, "KILL")
    rt.wait_status(cid, "stopped")
    rt.delete(cid)


def test_delete_of_a_paused_container_needs_force(rt, bundle):
    cid, pid = rt.started(bundle.args("sleep", "100"))
    rt("pause", cid).ok()
    r = rt.delete(cid, check=False)
    assert r.returncode == 1
    assert f"cannot delete container {cid} that is not stopped: paused" in r.err
    assert rt.status(cid) == "paused"
    rt("resume", cid).ok()
    assert rt.status(cid) == "running" and _proc_state(pid) != "Z"


def test_delete_takes_exactly_one_id(rt, bundle):
    cid, _ = rt.started(bundle.args("sleep", "100"))
    for args in ((), (cid, "other")):
        r = rt("delete", *args)
        assert r.returncode == 1 and 'delete' in r.err and 'requires exactly 1 argument(s)' in r.err
    assert rt.status(cid) == "running"


def test_delete_force_of_a_running_container(rt, bundle, util):
    cid, pid = rt.started(bundle.args("sleep", "100"))
    rt.delete(cid, "--force")
    assert rt.status(cid) is None
    util.wait_until(lambda: not os.path.exists(f"/proc/{pid}") or _proc_state(pid) == "Z",
                    what="the container's process to die")


def test_delete_force_of_a_created_container(rt, bundle):
    cid = rt.new_id()
    rt.create(cid, bundle.args("sleep", "100"))
    rt.delete(cid, "--force")
    assert rt.status(cid) is None


def test_duplicate_id_is_refused(rt, bundle, make_bundle):
    cid = rt.new_id()
    rt.create(cid, bundle.args("sleep", "100"))
    other = make_bundle("other").args("sleep", "100")
    r = rt.create(cid, other, check=False)
    assert r.returncode == 1
    assert "exists" in r.err
    state = rt.state(cid)
    assert state["status"] == "created" and state["bundle"] == str(bundle.path)


@pytest.mark.parametrize("bad_id", ["../escape", "a/b", "has space", ".."])
def test_invalid_id_is_refused(rt, bundle, tmp_path, bad_id):
    r = rt.create(bad_id, bundle.args("true"), check=False)
    assert r.returncode == 1
    assert "invalid" in r.err.lower() or "id" in r.err.lower()
    assert not (tmp_path / "rt" / "escape").exists()
    assert not rt.root.exists() or not any(rt.root.iterdir())


def test_missing_bundle_is_refused(rt, tmp_path):
    cid = rt.new_id()
    r = rt("create", "--bundle", str(tmp_path / "nonexistent"), cid)
    assert r.returncode == 1
    assert r.err.strip()
    assert rt.status(cid) is None


def test_missing_config_is_refused(rt, bundle):
    cid = rt.new_id()
    r = rt("create", "--bundle", str(bundle.path), cid)  # bundle.write() never called: no config.json
    assert r.returncode == 1
    assert "config.json" in r.err
    assert rt.status(cid) is None


def test_unknown_command_fails(rt):
    r = rt("frobnicate")
    assert r.returncode != 0
    assert "frobnicate" in r.err


@pytest.mark.parametrize("sig", ["SIGUSR1", "USR1", "10"])
def test_kill_delivers_a_signal_by_name_or_number(rt, bundle, util, sig):
    bundle.sh("trap 'echo got-usr1 > /got; exit 0' USR1; touch /ready; while :; do sleep 0.05; done")
    cid, _ = rt.started(bundle)
    util.wait_until(lambda: (bundle.rootfs / "ready").exists(), what="the trap to be set")
    rt.kill(cid, sig)
    got = bundle.rootfs / "got"
    util.wait_until(lambda: got.exists() and got.read_text() == "got-usr1\n", what=f"the container to get {sig}")
    rt.wait_status(cid, "stopped")


@pytest.mark.parametrize("sig", ["SIGKILL", "KILL", "9"])
def test_kill_sigkill_stops_the_container(rt, bundle, sig):
    cid, _ = rt.started(bundle.args("sleep", "100"))
    rt.kill(cid, sig)
    rt.wait_status(cid, "stopped")


def test_kill_default_signal_is_sigterm(rt, bundle, util):
    bundle.sh("trap 'echo got-term > /got; exit 0' TERM; touch /ready; while :; do sleep 0.05; done")
    cid, _ = rt.started(bundle)
    util.wait_until(lambda: (bundle.rootfs / "ready").exists(), what="the trap to be set")
    rt.kill(cid)
    util.wait_until(lambda: (bundle.rootfs / "got").exists(), what="the container to get SIGTERM")


def test_kill_of_a_stopped_container_fails(rt, bundle):
    cid, _ = rt.started(bundle.args("true"))
    rt.wait_status(cid, "stopped")
    r = rt.kill(cid, "KILL", check=False)
    assert r.returncode == 1
    assert "not running" in r.err


def test_kill_all_signals_every_process_of_the_container(rt, bundle, util):
    # Without a pid namespace, the children of the init outlive it unless --all reaches them.
    bundle.remove_namespace("pid")
    bundle.sh("sleep 100 & sleep 100 & touch /ready; wait")
    cid, pid = rt.started(bundle)
    util.wait_until(lambda: (bundle.rootfs / "ready").exists(), what="the children to start")
    pids = util.wait_until(lambda: (p := json.loads(rt("ps", "--format", "json", cid).ok().out or "[]"))
                           and len(p) >= 3 and p, what="three processes in the container")
    rt("kill", "--all", cid, "KILL").ok()
    util.wait_until(lambda: all(not os.path.exists(f"/proc/{p}") or _proc_state(p) == "Z" for p in pids),
                    what="every process of the container to die")
    rt.wait_status(cid, "stopped")


def test_flags_after_the_id_are_accepted(rt, bundle, util):
    # runc (urfave/cli) moves flags that follow the positional arguments before them.
    bundle.remove_namespace("pid")
    bundle.sh("sleep 100 & touch /ready; wait")
    cid, _ = rt.started(bundle)
    util.wait_until(lambda: (bundle.rootfs / "ready").exists(), what="the child to start")
    rt.kill(cid, "KILL", "--all")
    rt.wait_status(cid, "stopped")
    second, _ = rt.started(bundle)
    rt("delete", second, "--force").ok()
    assert rt.status(second) is None


def test_list_json(rt, bundle, make_bundle):
    first = rt.new_id()
    rt.create(first, bundle.args("sleep", "100"))
    second, second_pid = rt.started(make_bundle("second").args("sleep", "100"))
    r = rt("list", "--format", "json").ok()
    listed = {c["id"]: c for c in json.loads(r.out)}
    assert set(listed) == {first, second}
    assert listed[first]["status"] == "created"
    assert listed[second]["status"] == "running"
    assert listed[second]["pid"] == second_pid
    assert listed[first]["bundle"] == str(bundle.path)


def test_list_quiet_prints_ids(rt, bundle):
    cid = rt.new_id()
    rt.create(cid, bundle.args("sleep", "100"))
    assert rt("list", "-q").ok().out.split() == [cid]


def test_ps_json_lists_the_container_processes(rt, bundle, util):
    bundle.sh("sleep 100 & touch /ready; wait")
    cid, pid = rt.started(bundle)
    util.wait_until(lambda: (bundle.rootfs / "ready").exists(), what="the child to start")
    pids = util.wait_until(lambda: (p := json.loads(rt("ps", "--format", "json", cid).ok().out)) and len(p) >= 2
                           and p, what="two processes in ps")
    assert pid in pids
    assert len(pids) == 2
    for p in pids:
        assert os.path.exists(f"/proc/{p}")


def test_ps_table(rt, bundle):
    cid, pid = rt.started(bundle.args("sleep", "100"))
    r = rt("ps", cid).ok()
    lines = r.out.splitlines()
    header = lines[0].split()
    assert "PID" in header
    col = header.index("PID")
    assert [int(line.split()[col]) for line in lines[1:]] == [pid]


def test_pid_file_of_create(rt, bundle, tmp_path):
    cid = rt.new_id()
    pid_file = tmp_path / "container.pid"
    rt.create(cid, bundle.args("sleep", "100"), "--pid-file", str(pid_file))
    assert int(pid_file.read_text()) == rt.state(cid)["pid"]


def test_pid_file_of_run_detached(rt, bundle, tmp_path):
    cid = rt.new_id()
    pid_file = tmp_path / "run.pid"
    rt.run(bundle.args("sleep", "100"), "-d", "--pid-file", str(pid_file), cid=cid).ok()
    assert int(pid_file.read_text()) == rt.state(cid)["pid"]


def test_log_json_has_an_error_line_on_failure(rt, tmp_path):
    log = tmp_path / "runtime.log"
    r = rt("start", "no-such-container", global_args=("--log", str(log), "--log-format", "json"))
    assert r.returncode == 1
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    errors = [entry for entry in lines if entry.get("level") == "error"]
    assert errors, f"no error line in {log.read_text()!r}"
    assert "no-such-container" in errors[-1]["msg"] or "not exist" in errors[-1]["msg"]


def test_state_of_an_unknown_container_fails(rt):
    r = rt("state", "no-such-container")
    assert r.returncode == 1
    assert "does not exist" in r.err


def test_exec_runs_in_the_running_container(rt, bundle):
    bundle.config["hostname"] = "exec-host"
    cid, _ = rt.started(bundle.args("sleep", "100"))
    r = rt.exec(cid, "sh", "-c", "hostname; echo $$; exit 3")
    assert r.returncode == 3
    lines = r.out.split()
    assert lines[0] == "exec-host"
    assert int(lines[1]) > 1  # a new process in the container's pid namespace, not the init


def test_exec_process_file_env_cwd_user(rt, bundle, tmp_path):
    cid, _ = rt.started(bundle.args("sleep", "100"))
    process = dict(bundle.process, args=["sh", "-c", "pwd; id -u; id -g; echo $XVAR"], cwd="/tmp",
                   env=["PATH=/bin:/usr/bin:/sbin", "XVAR=from-process-file"], user={"uid": 1000, "gid": 1001})
    process_file = tmp_path / "process.json"
    process_file.write_text(json.dumps(process))
    r = rt.exec(cid, flags=("--process", str(process_file)))
    assert r.returncode == 0, r
    assert r.out.split() == ["/tmp", "1000", "1001", "from-process-file"]


def test_exec_defaults_come_from_the_config(rt, bundle):
    bundle.process["cwd"] = "/etc"
    bundle.process["env"] = ["PATH=/bin:/usr/bin", "FROM_CONFIG=yes"]
    bundle.process["user"] = {"uid": 1000, "gid": 1001}
    cid, _ = rt.started(bundle.args("sleep", "100"))
    r = rt.exec(cid, "sh", "-c", "pwd; id -u; id -g; echo $FROM_CONFIG")
    assert r.returncode == 0, r
    assert r.out.split() == ["/etc", "1000", "1001", "yes"]


def test_exec_flags_env_cwd_user(rt, bundle):
    cid, _ = rt.started(bundle.args("sleep", "100"))
    r = rt.exec(cid, "sh", "-c", "pwd; id -u; id -g; echo $FOO", flags=("-e", "FOO=bar", "--cwd", "/etc", "-u", "1000:1001"))
    assert r.returncode == 0, r
    assert r.out.split() == ["/etc", "1000", "1001", "bar"]


def test_exec_detached_with_pid_file(rt, bundle, tmp_path, util):
    cid, _ = rt.started(bundle.args("sleep", "100"))
    pid_file = tmp_path / "exec.pid"
    rt.exec(cid, "sh", "-c", "echo $$ > /exec-pid; sleep 100", flags=("-d", "--pid-file", str(pid_file))).ok()
    pid = int(pid_file.read_text())
    assert os.path.exists(f"/proc/{pid}")
    util.wait_until(lambda: (bundle.rootfs / "exec-pid").exists(), what="the exec'd process to run")
    assert pid in json.loads(rt("ps", "--format", "json", cid).ok().out)


def test_exec_cap_adds_a_capability(rt, bundle, util):
    cid, _ = rt.started(bundle.args("sleep", "100"))
    r = rt.exec(cid, "cat", "/proc/self/status", flags=("--cap", "CAP_SYS_ADMIN")).ok()
    eff = int(util.status_field(r.out, "CapEff"), 16)
    assert eff & (1 << 21), "CAP_SYS_ADMIN (21) missing from CapEff"
    r = rt.exec(cid, "cat", "/proc/self/status").ok()
    assert not int(util.status_field(r.out, "CapEff"), 16) & (1 << 21)


def test_exec_in_a_stopped_container_fails(rt, bundle):
    cid, _ = rt.started(bundle.args("true"))
    rt.wait_status(cid, "stopped")
    r = rt.exec(cid, "true")
    assert r.returncode != 0


def test_spec_writes_a_config_the_runtime_runs(rt, tmp_path, busybox_rootfs):
    import shutil
    d = tmp_path / "specced"
    d.mkdir()
    rt("spec", "--bundle", str(d)).ok()
    text = (d / "config.json").read_text()
    config = json.loads(text)
    assert text == json.dumps(config, indent="\t")  # laid out as runc lays it out
    assert config["ociVersion"] and config["root"]["path"] == "rootfs"
    r = rt("spec", "--bundle", str(d))
    assert r.returncode != 0 and "exists" in r.err, "spec must not overwrite a config.json"
    shutil.copytree(busybox_rootfs, d / "rootfs", symlinks=True)
    config["process"].update(terminal=False, args=["echo", "spec-ok"])
    (d / "config.json").write_text(json.dumps(config))
    r = rt("run", "--bundle", str(d), rt.new_id())
    assert r.returncode == 0, r
    assert r.out == "spec-ok\n"


def test_state_shows_the_annotations(rt, bundle):
    bundle.config["annotations"] = {"org.example.key": "value", "other": "x"}
    cid = rt.new_id()
    rt.create(cid, bundle.args("sleep", "100"))
    assert rt.state(cid)["annotations"] == {"org.example.key": "value", "other": "x"}
    out = rt("state", cid).ok().out
    assert out == json.dumps(json.loads(out), indent=2) + "\n"  # runc's layout, the nested object too


def test_kill_of_a_created_container(rt, bundle):
    cid = rt.new_id()
    rt.create(cid, bundle.args("sleep", "100"))
    rt.kill(cid, "KILL")
    rt.wait_status(cid, "stopped")
    rt.delete(cid)


def test_delete_of_a_created_container_needs_no_force(rt, bundle):
    cid = rt.new_id()
    rt.create(cid, bundle.args("sleep", "100"))
    pid = rt.state(cid)["pid"]
    rt.delete(cid)
    assert rt.status(cid) is None
    assert not os.path.exists(f"/proc/{pid}") or _proc_state(pid) == "Z"


def test_run_passes_stdin_through(rt, bundle, tmp_path):
    data = tmp_path / "stdin.txt"
    data.write_text("line one\nline two\n")
    bundle.args("wc", "-l").write()
    with open(data, "rb") as stdin:
        r = rt("run", "--bundle", str(bundle.path), rt.new_id(), stdin=stdin)
    assert r.returncode == 0, r
    assert r.out.strip() == "2"


def test_run_exit_code_of_a_killed_container_is_128_plus_the_signal(rt, bundle, util):
    cid = rt.new_id()
    bundle.args("sleep", "100").write()
    proc, out, err = rt.spawn("run", "--bundle", str(bundle.path), cid)
    try:
        util.wait_until(lambda: rt.status(cid) == "running", what="the container to run")
        rt.kill(cid, "KILL")
        assert proc.wait(timeout=10) == 128 + 9
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# A shell that says when it runs, and exits 42 on SIGTERM.
TERM_TRAP = "trap 'echo got-term; exit 42' TERM; touch /ready; while :; do sleep 0.05; done"


def _term_reaches_the_shell(proc, out, ready, util) -> None:
    """SIGTERM sent to the runtime as soon as the shell runs reaches the shell: the runtime
    forwards from before the process can run, not only once it waits for it."""
    try:
        util.wait_until(ready.exists, what="the shell to run")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 42
        assert out.read_text() == "got-term\n"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_run_forwards_signals_to_the_container(rt, bundle, util):
    bundle.sh(TERM_TRAP).write()
    proc, out, _err = rt.spawn("run", "--bundle", str(bundle.path), rt.new_id())
    _term_reaches_the_shell(proc, out, bundle.rootfs / "ready", util)


def test_exec_forwards_signals_to_its_process(rt, bundle, util):
    cid, _ = rt.started(bundle.args("sleep", "100"))
    proc, out, _err = rt.spawn("exec", cid, "sh", "-c", TERM_TRAP)
    _term_reaches_the_shell(proc, out, bundle.rootfs / "ready", util)


def test_preserve_fds(rt, bundle):
    bundle.sh("cat <&3; ls /proc/self/fd").write()
    r_fd, w_fd = os.pipe()
    os.write(w_fd, b"through fd 3\n")
    os.close(w_fd)
    try:
        r = rt("run", "--preserve-fds", "1", "--bundle", str(bundle.path), rt.new_id(), pass_fds=(3,),
               preexec_fn=lambda: os.dup2(r_fd, 3))
    finally:
        os.close(r_fd)
    assert r.returncode == 0, r
    lines = r.out.splitlines()
    assert lines[0] == "through fd 3"
    assert sorted(int(x) for x in lines[1:])[:4] == [0, 1, 2, 3]


def test_exec_in_a_paused_container_fails(rt, bundle):
    cid, _ = rt.started(bundle.args("sleep", "100"))
    rt("pause", cid).ok()
    r = rt.exec(cid, "true", timeout=10)
    assert r.returncode != 0
    assert "paused" in r.err
    rt("resume", cid).ok()


def test_empty_args_are_refused(rt, bundle):
    cid = rt.new_id()
    r = rt.create(cid, bundle.args(), check=False)
    assert r.returncode != 0
    assert rt.status(cid) is None


def test_relative_cwd_is_refused(rt, bundle):
    bundle.process["cwd"] = "tmp"
    cid = rt.new_id()
    r = rt.create(cid, bundle.args("true"), check=False)
    assert r.returncode != 0
    assert "cwd" in r.err.lower()
    assert rt.status(cid) is None


def test_absolute_root_path(rt, bundle, make_bundle, tmp_path):
    other = make_bundle("elsewhere")
    (other.rootfs / "which").write_text("the absolute one\n")
    bundle.config["root"]["path"] = str(other.rootfs)
    r = rt.run(bundle.args("cat", "/which"))
    assert r.returncode == 0, r
    assert r.out == "the absolute one\n"
