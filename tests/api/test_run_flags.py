"""`run`/`create` flags, attach, restart, rename, logs and exit codes on real containers,
through the real docker CLI against sampand (and the sampan CLI where it has its own
handling: --env-file, seccomp=FILE, bad flags)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from private_daemons import in_netns

DOCKER = "/usr/local/bin/docker"
PY = sys.executable


def _ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return r.stdout.decode()


def _inspect(sampand, ref: str) -> dict:
    return json.loads(_ok(sampand.docker("inspect", ref)))[0]


def _cgroup_file(pid: int, controller: str, name: str) -> str | None:
    """The host path of a cgroup file of ``pid`` (v1: the controller's hierarchy; v2: unified)."""
    for line in open(f"/proc/{pid}/cgroup").read().splitlines():
        _, ctrls, path = line.split(":", 2)
        if controller in ctrls.split(","):
            return f"/sys/fs/cgroup/{controller}{path}/{name}"
        if not ctrls:
            for base in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
                if os.path.exists(f"{base}{path}/{name}"):
                    return f"{base}{path}/{name}"
    return None


def _v2() -> bool:
    return os.path.exists("/sys/fs/cgroup/cgroup.controllers")


# ------------------------------------------------------------------ devices, kernel knobs
def test_device_sysctl_ulimit(sampand):
    d = sampand.docker
    devs = [p for p in ("/dev/fuse", "/dev/loop-control") if os.path.exists(p)]
    if not devs:
        pytest.skip("neither /dev/fuse nor /dev/loop-control on this host")
    args = [a for p in devs for a in ("--device", p)]
    checks = " && ".join(f"[ -c {p} ] && exec 3<>{p} && echo opened {p}" for p in devs)
    assert _ok(d("run", "--rm", *args, "busybox", "sh", "-c", checks)) == "".join(f"opened {p}\n" for p in devs)
    # not there without the flag (and not openable: the device cgroup has no rule for it)
    out = _ok(d("run", "--rm", "busybox", "sh", "-c", f"[ -e {devs[0]} ] && echo present || echo absent"))
    assert out == "absent\n"
    out = _ok(d("run", "--rm", "--privileged", "busybox", "sh", "-c", f"[ -c {devs[0]} ] && echo present"))
    assert out == "present\n"

    # (a new namespace takes its ip_forward from the host's, which networking turned on)
    default = _ok(d("run", "--rm", "busybox", "cat", "/proc/sys/net/ipv4/ip_forward"))
    other = "0" if default == "1\n" else "1"
    out = _ok(d("run", "--rm", "--sysctl", f"net.ipv4.ip_forward={other}", "busybox", "cat",
                "/proc/sys/net/ipv4/ip_forward"))
    assert out == other + "\n"
    r = d("run", "--rm", "--network", "host", "--sysctl", "net.ipv4.ip_forward=1", "busybox", "true")
    assert r.returncode == 125 and b"not allowed in host network namespace" in r.stderr

    out = _ok(d("run", "--rm", "--ulimit", "nofile=512:1024", "busybox", "sh", "-c",
                "grep 'Max open files' /proc/self/limits; ulimit -n"))
    assert out.split()[3:5] == ["512", "1024"] and out.splitlines()[1] == "512"


def test_cpu_shares_cpuset_memory_swap(sampand):
    d = sampand.docker
    out = _ok(d("run", "--rm", "--cpuset-cpus", "0", "busybox", "grep", "Cpus_allowed_list", "/proc/self/status"))
    assert out.split() == ["Cpus_allowed_list:", "0"]
    cid = _ok(d("run", "-d", "--cpu-shares", "512", "--cpuset-cpus", "0", "-m", "32m", "--memory-swap", "64m",
                "busybox", "sleep", "60")).strip()
    try:
        info = _inspect(sampand, cid)
        hc = info["HostConfig"]
        assert (hc["CpuShares"], hc["CpusetCpus"], hc["Memory"], hc["MemorySwap"]) == (512, "0", 32 << 20, 64 << 20)
        pid = info["State"]["Pid"]
        if _v2():
            assert open(_cgroup_file(pid, "cpu", "cpu.weight")).read().strip() == \
                str(1 + ((512 - 2) * 9999) // 262142)
            assert open(_cgroup_file(pid, "memory", "memory.max")).read().strip() == str(32 << 20)
            assert open(_cgroup_file(pid, "memory", "memory.swap.max")).read().strip() == str(32 << 20)
        else:
            assert open(_cgroup_file(pid, "cpu", "cpu.shares")).read().strip() == "512"
            assert open(_cgroup_file(pid, "memory", "memory.limit_in_bytes")).read().strip() == str(32 << 20)
            memsw = _cgroup_file(pid, "memory", "memory.memsw.limit_in_bytes")
            if memsw and os.path.exists(memsw):
                assert open(memsw).read().strip() == str(64 << 20)
        assert open(_cgroup_file(pid, "cpuset", "cpuset.cpus") or
                    _cgroup_file(pid, "cpuset", "cpuset.cpus.effective")).read().strip() == "0"
    finally:
        d("rm", "-f", cid)
    r = d("run", "--rm", "-m", "32m", "--memory-swap", "16m", "busybox", "true")
    assert r.returncode == 125 and b"Minimum memoryswap limit" in r.stderr


# ------------------------------------------------------------------ stop signal and timeout
def test_stop_signal_and_stop_timeout(sampand):
    d = sampand.docker
    cid = _ok(d("run", "-d", "--stop-signal", "SIGUSR1", "--stop-timeout", "2", "busybox", "sh", "-c",
                "trap 'echo got USR1' USR1; echo ready; while true; do sleep 0.1; done")).strip()
    for _ in range(100):
        if _ok(d("logs", cid)) == "ready\n":
            break
        time.sleep(0.05)
    info = _inspect(sampand, cid)
    assert info["Config"]["StopSignal"] == "SIGUSR1" and info["Config"]["StopTimeout"] == 2
    t0 = time.monotonic()
    assert _ok(d("stop", cid)).strip() == cid
    took = time.monotonic() - t0
    assert 1.8 <= took < 6, took        # the trap ignores USR1: killed once the 2 s are over
    assert _ok(d("logs", cid)) == "ready\ngot USR1\n"
    assert _inspect(sampand, cid)["State"]["ExitCode"] == 137
    # an explicit -t overrides the container's timeout; a process that exits on the signal is quick
    _ok(d("start", cid))
    t0 = time.monotonic()
    _ok(d("stop", "-t", "0", cid))
    assert time.monotonic() - t0 < 1.5
    d("rm", cid)
    cid = _ok(d("run", "-d", "--stop-signal", "USR1", "busybox", "sh", "-c",
                "trap 'echo bye; exit 7' USR1; while true; do sleep 0.1; done")).strip()
    time.sleep(0.3)
    t0 = time.monotonic()
    _ok(d("stop", cid))
    assert time.monotonic() - t0 < 1.5
    assert _inspect(sampand, cid)["State"]["ExitCode"] == 7
    d("rm", cid)


# ------------------------------------------------------------------ logs
def test_log_rotation_keeps_the_newest_lines(sampand):
    d = sampand.docker
    cid = _ok(d("run", "-d", "--log-opt", "max-size=1k", "--log-opt", "max-file=2", "busybox", "sh", "-c",
                "for i in $(seq 1 300); do echo line $i; done")).strip()
    assert _ok(d("wait", cid)).strip() == "0"
    info = _inspect(sampand, cid)
    assert info["HostConfig"]["LogConfig"]["Config"] == {"max-size": "1k", "max-file": "2"}
    path = info["LogPath"]
    assert os.path.exists(path + ".1") and not os.path.exists(path + ".2")   # rotated, two files kept
    assert os.path.getsize(path) <= 1024 + 100 and os.path.getsize(path + ".1") <= 1024 + 100
    lines = _ok(d("logs", cid)).splitlines()
    nums = [int(x.split()[1]) for x in lines]
    assert nums[-1] == 300 and nums == list(range(nums[0], 301)) and nums[0] > 1
    assert _ok(d("logs", "--tail", "2", cid)) == "line 299\nline 300\n"
    d("rm", cid)


def test_logs_follow_a_running_container(sampand):
    d = sampand.docker
    cid = _ok(d("run", "-d", "busybox", "sh", "-c",
                "echo first; sleep 1; for i in 1 2 3; do echo more $i; sleep 0.3; done; echo err >&2")).strip()
    p = subprocess.Popen([DOCKER, "logs", "-f", cid], env=sampand.env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        first = p.stdout.readline()
        assert first == b"first\n"
        assert _inspect(sampand, cid)["State"]["Running"]   # following, not reading a finished log
        out, err = p.communicate(timeout=20)                # ends by itself when the container does
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0
    assert out == b"more 1\nmore 2\nmore 3\n" and err == b"err\n"
    d("rm", cid)


# ------------------------------------------------------------------ environment, user, entrypoint, labels
def test_env_file_user_entrypoint_hostname_labels(sampand, tmp_path):
    d, s = sampand.docker, sampand.sampan
    envf = tmp_path / "env"
    envf.write_text("# a comment\nA=1\n\nB=two words\nFROM_ENV\nC=x=y\n")
    sampand_env = dict(sampand.env, FROM_ENV="inherited")
    for cli in (DOCKER, None):
        cmd = ([cli] if cli else [PY, "-m", "sampan.cli.main"]) + [
            "run", "--rm", "--env-file", str(envf), "-e", "A=override", "busybox", "sh", "-c",
            'echo "$A|$B|$FROM_ENV|$C"']
        r = subprocess.run(cmd, env=sampand_env, capture_output=True, timeout=60)
        assert r.stdout == b"override|two words|inherited|x=y\n", (cli, r)

    out = _ok(d("run", "--rm", "-u", "1000:1000", "busybox", "sh", "-c", "id; touch /f 2>/dev/null || echo denied"))
    assert out.startswith("uid=1000 gid=1000") and out.endswith("\ndenied\n"), out
    assert _ok(d("run", "--rm", "-u", "nobody", "busybox", "id", "-un")) == "nobody\n"
    assert _ok(d("run", "--rm", "--entrypoint", "/bin/echo", "busybox", "hi", "there")) == "hi there\n"
    out = _ok(d("run", "--rm", "--entrypoint", "sh", "busybox", "-c", "echo $0 $HOSTNAME"))
    assert out.split()[0] == "sh" and len(out.split()[1]) == 12
    assert _ok(d("run", "--rm", "--hostname", "myhost", "busybox", "sh", "-c",
                 "hostname; cat /etc/hostname; echo $HOSTNAME")) == "myhost\nmyhost\nmyhost\n"

    cid = _ok(d("create", "-l", "app=web", "--label", "tier", "--name", "labelled", "busybox", "true")).strip()
    assert _inspect(sampand, cid)["Config"]["Labels"] == {"app": "web", "tier": ""}
    assert _ok(d("ps", "-a", "-q", "--no-trunc", "--filter", "label=app=web")).split() == [cid]
    assert _ok(d("ps", "-a", "-q", "--filter", "label=app=db")) == ""
    d("rm", cid)


# ------------------------------------------------------------------ mounts
def test_tmpfs_and_mount_types(sampand, tmp_path):
    d = sampand.docker
    out = _ok(d("run", "--rm", "--tmpfs", "/x:size=1m", "busybox", "sh", "-c",
                "df -k /x | tail -1; grep ' /x ' /proc/mounts"))
    df, mnt = out.splitlines()
    assert df.split()[1] == "1024" and mnt.split()[2] == "tmpfs" and "size=1024k" in mnt
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "f").write_text("from host\n")
    out = _ok(d("run", "--rm",
                "--mount", "type=volume,src=mvol,dst=/v",
                "--mount", f"type=bind,src={tmp_path / 'b'},dst=/b,readonly",
                "--mount", "type=tmpfs,dst=/t,tmpfs-size=2m",
                "busybox", "sh", "-c",
                "echo kept > /v/f; cat /b/f; touch /b/new 2>/dev/null || echo ro; df -k /t | tail -1"))
    lines = out.splitlines()
    assert lines[:2] == ["from host", "ro"] and lines[2].split()[1] == "2048", out
    assert not (tmp_path / "b" / "new").exists()
    assert _ok(d("run", "--rm", "--mount", "source=mvol,target=/data", "busybox", "cat", "/data/f")) == "kept\n"
    assert _ok(d("volume", "inspect", "-f", "{{.Name}}", "mvol")) == "mvol\n"
    # a writable bind
    _ok(d("run", "--rm", "--mount", f"type=bind,source={tmp_path / 'b'},target=/b", "busybox", "sh", "-c",
          "echo back > /b/g"))
    assert (tmp_path / "b" / "g").read_text() == "back\n"
    r = d("run", "--rm", "--mount", f"type=bind,src={tmp_path / 'nonexistent'},dst=/b", "busybox", "true")
    assert r.returncode == 125 and b"does not exist" in r.stderr
    _ok(d("volume", "rm", "mvol"))


# ------------------------------------------------------------------ security, shm, init, tty, caps
def test_security_opts_shm_init_tty_caps(sampand, tmp_path):
    d = sampand.docker
    assert _ok(d("run", "--rm", "busybox", "grep", "Seccomp:", "/proc/self/status")).split()[1] == "2"
    assert _ok(d("run", "--rm", "--security-opt", "seccomp=unconfined", "busybox", "grep", "Seccomp:",
                 "/proc/self/status")).split()[1] == "0"
    assert _ok(d("run", "--rm", "--security-opt", "no-new-privileges", "busybox", "grep", "NoNewPrivs",
                 "/proc/self/status")).split()[1] == "1"
    prof = tmp_path / "profile.json"
    prof.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}))
    script = "mkdir /newdir || echo refused; touch /file && echo touched; grep Seccomp: /proc/self/status"
    out = _ok(d("run", "--rm", "--security-opt", f"seccomp={prof}", "busybox", "sh", "-c", script))
    assert out.splitlines()[-3:] == ["refused", "touched", "Seccomp:\t2"], out
    # the sampan CLI reads the file itself, as docker's does: a relative path works
    r = subprocess.run([PY, "-m", "sampan.cli.main", "run", "--rm", "--security-opt",
                        "seccomp=profile.json", "busybox", "sh", "-c", script],
                       env=sampand.env, cwd=tmp_path, capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stdout.decode().splitlines()[-3:] == ["refused", "touched", "Seccomp:\t2"], r
    r = d("run", "--rm", "--security-opt", "bogus=1", "busybox", "true")
    assert r.returncode == 125

    assert _ok(d("run", "--rm", "--shm-size", "8m", "busybox", "df", "-k", "/dev/shm")).splitlines()[1].split()[1] \
        == "8192"
    assert _ok(d("run", "--rm", "busybox", "df", "-k", "/dev/shm")).splitlines()[1].split()[1] == "65536"

    # -t: a pty, TERM set, \r\n line ends
    out = d("run", "--rm", "-t", "busybox", "sh", "-c", "tty; echo $TERM").stdout
    assert out == b"/dev/pts/0\r\nxterm\r\n"

    # --cap-add / --cap-drop
    assert d("run", "--rm", "busybox", "ip", "link", "set", "lo", "mtu", "1500").returncode != 0
    _ok(d("run", "--rm", "--cap-add", "NET_ADMIN", "busybox", "ip", "link", "set", "lo", "mtu", "1500"))
    assert d("run", "--rm", "--cap-drop", "CHOWN", "busybox", "chown", "1", "/tmp").returncode != 0


def test_init_reaps_zombies(sampand):
    """An orphan reparented to PID 1 becomes a zombie when PID 1 is a program that never waits
    (here `sleep`); with --init, tini is PID 1 and reaps it."""
    d = sampand.docker
    script = 'sh -c "sleep 0.2 &"; exec sleep 60'
    zombies = {}
    for init in (False, True):
        cid = _ok(d("run", "-d", *(["--init"] if init else []), "busybox", "sh", "-c", script)).strip()
        try:
            time.sleep(1.0)
            ps = _ok(d("exec", cid, "ps", "-o", "pid,stat,comm"))
            zombies[init] = [line for line in ps.splitlines()[1:] if line.split()[1].startswith("Z")]
            assert ("docker-init" in ps or "tini" in ps) == init, ps
        finally:
            d("rm", "-f", cid)
    assert len(zombies[False]) == 1, zombies   # the check can see one
    assert zombies[True] == []


# ------------------------------------------------------------------ attach, restart, rename
def test_attach_to_running_container(sampand):
    d = sampand.docker
    cid = _ok(d("run", "-d", "busybox", "sh", "-c", "sleep 1.5; echo late; echo err >&2; exit 3")).strip()
    r = d("attach", cid)
    assert r.returncode == 3 and r.stdout == b"late\n" and r.stderr == b"err\n", r
    d("rm", cid)
    # with stdin
    cid = _ok(d("run", "-d", "-i", "busybox", "sh", "-c", "read line; echo got $line")).strip()
    r = d("attach", cid, input=b"hello\n")
    assert r.returncode == 0 and r.stdout == b"got hello\n", r
    d("rm", cid)
    # attaching does not hold the container: the client goes away, the container runs on
    cid = _ok(d("run", "-d", "busybox", "sh", "-c", "while true; do echo tick; sleep 0.2; done")).strip()
    p = subprocess.Popen([DOCKER, "attach", "--no-stdin", cid], env=sampand.env, stdout=subprocess.PIPE)
    assert p.stdout.readline() == b"tick\n"
    p.kill()
    p.wait()
    time.sleep(0.3)
    assert _inspect(sampand, cid)["State"]["Running"]
    d("rm", "-f", cid)
    # a paused container is not attached to
    cid = _ok(d("run", "-d", "busybox", "sleep", "60")).strip()
    _ok(d("pause", cid))
    r = d("attach", cid)
    assert r.returncode != 0 and b"paused" in r.stderr
    d("rm", "-f", cid)


def test_start_attach_gets_everything_each_time(sampand):
    d = sampand.docker
    cid = _ok(d("create", "busybox", "sh", "-c", "seq 1 3000; echo err >&2; exit 4")).strip()
    want = "".join(f"{i}\n" for i in range(1, 3001)).encode()
    for _ in range(2):   # created, then exited: both attach before the start
        r = d("start", "-a", cid)
        assert r.returncode == 4 and r.stdout == want and r.stderr == b"err\n", (r.returncode, r.stderr)
    r = d("create", "-i", "busybox", "sh", "-c", "cat; echo done")
    cid2 = _ok(r).strip()
    r = d("start", "-a", "-i", cid2, input=b"typed\n")
    assert r.returncode == 0 and r.stdout == b"typed\ndone\n", r
    d("rm", cid, cid2)


def test_restart_and_rename(sampand):
    d = sampand.docker
    cid = _ok(d("run", "-d", "--name", "rs1", "busybox", "sh", "-c",
                "echo start; trap 'exit 0' TERM; while true; do sleep 0.1; done")).strip()
    time.sleep(0.3)
    before = _inspect(sampand, cid)["State"]
    assert _ok(d("restart", "-t", "5", "rs1")).strip() == "rs1"
    after = _inspect(sampand, cid)["State"]
    assert after["Running"] and after["StartedAt"] != before["StartedAt"] and after["Pid"] != before["Pid"]
    for _ in range(50):
        if _ok(d("logs", "rs1")) == "start\nstart\n":
            break
        time.sleep(0.05)
    assert _ok(d("logs", "rs1")) == "start\nstart\n"
    # a stopped container restarts too
    _ok(d("stop", "rs1"))
    _ok(d("restart", "rs1"))
    assert _inspect(sampand, cid)["State"]["Running"]

    _ok(d("rename", "rs1", "rs2"))
    assert _inspect(sampand, "rs2")["Name"] == "/rs2"
    assert d("inspect", "rs1").returncode != 0
    assert _ok(d("ps", "--format", "{{.Names}}", "--filter", f"id={cid}")) == "rs2\n"
    _ok(d("create", "--name", "rs3", "busybox", "true"))
    r = d("rename", "rs2", "rs3")
    assert r.returncode != 0 and b"already in use" in r.stderr
    # the name is free again: a new container may take it
    _ok(d("rename", "rs2", "rs4"))
    _ok(d("create", "--name", "rs2", "busybox", "true"))
    for n in ("rs2", "rs3", "rs4"):
        d("rm", "-f", n)


# ------------------------------------------------------------------ exit codes
def test_exit_codes(sampand):
    d, s = sampand.docker, sampand.sampan
    for cli in (d, s):
        r = cli("run", "--rm", "--bogus-flag", "busybox", "true")
        assert r.returncode == 125, r                              # a bad flag
        r = cli("run", "--rm", "--pull", "never", "nosuchimage:1", "true")
        assert r.returncode == 125, r                              # a daemon error
        # (a 404: without --pull never the docker CLI would try to pull the image first)
        r = cli("run", "--rm", "--pull", "never", "--network", "nosuchnet", "busybox", "true")
        assert r.returncode == 125 and b"not found" in r.stderr, r
        r = cli("run", "--rm", "busybox", "/etc/passwd")
        assert r.returncode == 126, r                              # not executable
        r = cli("run", "--rm", "busybox", "/etc")
        assert r.returncode == 126, r                              # a directory
        r = cli("run", "--rm", "busybox", "nosuchcommand")
        assert r.returncode == 127, r                              # not found in $PATH
        r = cli("run", "--rm", "busybox", "/no/such/path")
        assert r.returncode == 127, r
        r = cli("run", "--rm", "busybox", "sh", "-c", "exit 42")
        assert r.returncode == 42, r                               # the container's own
    # the --rm containers whose start failed are gone (the engine removed them)
    assert _ok(d("ps", "-a", "-q")) == ""
    # detached: the error comes from start
    r = d("run", "-d", "--name", "notfound", "busybox", "nosuchcommand")
    assert r.returncode == 127
    assert _inspect(sampand, "notfound")["State"]["ExitCode"] == 127
    r = d("start", "notfound")
    assert r.returncode != 0 and b"executable file not found" in r.stderr
    d("rm", "notfound")


# ------------------------------------------------------------------ networks
def test_network_modes_through_docker(sampand):
    d = sampand.docker
    out = _ok(d("run", "--rm", "--network", "none", "busybox", "sh", "-c", "ls /sys/class/net; cat /sys/class/net/lo/flags"))
    assert out == "lo\n0x9\n"
    for args in ([], ["--network", "bridge"]):
        out = _ok(d("run", "--rm", *args, "busybox", "sh", "-c", "ls /sys/class/net; cat /sys/class/net/lo/flags"))
        assert out == "eth0\nlo\n0x9\n", args
    # the daemon's namespace is its own: no other test changes its links meanwhile (the
    # kernel removes the veths of the containers above in the background: not counted)
    links = subprocess.run([*in_netns(sampand.netns), "ip", "-o", "link"], capture_output=True,
                           text=True, check=True).stdout
    host_ifaces = sorted(n for n in (line.split(": ")[1].split("@")[0] for line in links.splitlines())
                         if not n.startswith("veth"))
    out = _ok(d("run", "--rm", "--network", "host", "busybox", "sh", "-c",
                "ls /sys/class/net | grep -v ^veth; hostname; cat /etc/hosts"))
    assert out == "\n".join(host_ifaces) + "\n" + os.uname().nodename + "\n" + open("/etc/hosts").read()
    a = _ok(d("create", "busybox", "true")).strip()
    b = _ok(d("create", "--network", "host", "busybox", "true")).strip()
    fmt = "{{.HostConfig.NetworkMode}} {{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}"
    assert _ok(d("inspect", "-f", fmt, a)) == "bridge bridge\n"
    assert _ok(d("inspect", "-f", fmt, b)) == "host host\n"
    rows = _ok(d("ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Networks}}")).splitlines()
    assert f"{a} bridge" in rows and f"{b} host" in rows
    d("rm", a, b)
