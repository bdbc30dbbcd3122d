"""process: args, env, cwd, user, umask, capabilities, noNewPrivileges, rlimits,
oomScoreAdj, and a terminal handed over a --console-socket (for the init and for exec)."""
from __future__ import annotations

import json
import os
import resource
from pathlib import Path

import pytest

CAP_NUMBERS = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_FOWNER": 3, "CAP_KILL": 5, "CAP_SETGID": 6,
               "CAP_SETUID": 7, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_RAW": 13, "CAP_SYS_CHROOT": 18,
               "CAP_SYS_ADMIN": 21, "CAP_AUDIT_WRITE": 29}


def _mask(names) -> int:
    bits = 0
    for n in names:
        bits |= 1 << CAP_NUMBERS[n]
    return bits


def _limits(text: str) -> dict[str, tuple[str, str]]:
    out = {}
    for line in text.splitlines()[1:]:
        parts = line[26:].split()
        out[line[:26].strip()] = (parts[0], parts[1])
    return out


def test_args_are_passed_verbatim(rt, bundle):
    r = rt.run(bundle.args("sh", "-c", 'for a in "$0" "$@"; do echo "[$a]"; done', "zero", "a b", "", "*", "$HOME"))
    assert r.returncode == 0, r
    assert r.out.splitlines() == ["[zero]", "[a b]", "[]", "[*]", "[$HOME]"]


def test_args_executable_not_found(rt, bundle):
    cid = rt.new_id()
    r = rt.create(cid, bundle.args("/no/such/binary"), check=False)
    if r.returncode == 0:  # reported at start instead (runc 1.1 checks at create)
        r = rt.start(cid, check=False)
    assert r.returncode != 0
    assert "no such file" in r.err.lower() or "not found" in r.err.lower()


def test_env(rt, bundle):
    bundle.process["env"] = ["PATH=/bin:/usr/bin", "FOO=bar baz", "EMPTY=", "WITH_EQ=a=b"]
    r = rt.run(bundle.args("env"))
    assert r.returncode == 0, r
    env = dict(line.split("=", 1) for line in r.out.splitlines())
    assert env["FOO"] == "bar baz"
    assert env["EMPTY"] == ""
    assert env["WITH_EQ"] == "a=b"
    assert env["PATH"] == "/bin:/usr/bin"
    assert env["HOME"] == "/root"  # from the container's /etc/passwd, as runc does
    assert "TERM" not in env


def test_cwd(rt, bundle):
    bundle.process["cwd"] = "/etc"
    r = rt.run(bundle.args("pwd"))
    assert r.returncode == 0, r
    assert r.out.strip() == "/etc"


def test_user_uid_gid_and_additional_gids(rt, bundle, util):
    bundle.process["user"] = {"uid": 1000, "gid": 1001, "additionalGids": [1002, 1003]}
    r = rt.run(bundle.args("cat", "/proc/self/status"))
    assert r.returncode == 0, r
    assert util.status_field(r.out, "Uid").split() == ["1000"] * 4
    assert util.status_field(r.out, "Gid").split() == ["1001"] * 4
    assert sorted(util.status_field(r.out, "Groups").split()) == ["1002", "1003"]


def test_user_home_falls_back_to_root_dir(rt, bundle):
    bundle.process["user"] = {"uid": 4242, "gid": 4242}
    r = rt.run(bundle.sh("echo $HOME; id -u"))
    assert r.returncode == 0, r
    assert r.out.split() == ["/", "4242"]


@pytest.mark.parametrize("umask,mode", [(0o027, "640"), (0o077, "600"), (0o002, "664")])
def test_umask(rt, bundle, umask, mode):
    bundle.process["user"]["umask"] = umask
    r = rt.run(bundle.sh("umask; touch /tmp/f; stat -c %a /tmp/f"))
    assert r.returncode == 0, r
    assert r.out.split() == [f"{umask:04o}", mode]


def test_default_umask_is_0022(rt, bundle):
    r = rt.run(bundle.args("sh", "-c", "umask"))
    assert r.returncode == 0, r
    assert r.out.strip() == "0022"


def test_capabilities_of_root(rt, bundle, util):
    caps = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETUID"]
    bundle.process["capabilities"] = {k: list(caps) for k in ("bounding", "effective", "permitted", "inheritable",
                                                               "ambient")}
    r = rt.run(bundle.args("cat", "/proc/self/status"))
    assert r.returncode == 0, r
    for field in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(util.status_field(r.out, field), 16) == _mask(caps), field


def test_capabilities_of_a_non_root_user_come_from_ambient(rt, bundle, util):
    bounding = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW"]
    kept = ["CAP_KILL", "CAP_NET_BIND_SERVICE"]
    bundle.process["user"] = {"uid": 1000, "gid": 1000}
    bundle.process["capabilities"] = {"bounding": bounding, "effective": kept, "permitted": kept,
                                      "inheritable": kept, "ambient": kept}
    r = rt.run(bundle.args("cat", "/proc/self/status"))
    assert r.returncode == 0, r
    assert int(util.status_field(r.out, "CapBnd"), 16) == _mask(bounding)
    for field in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(util.status_field(r.out, field), 16) == _mask(kept), field


def test_capabilities_default_spec(rt, bundle, util):
    caps = bundle.process["capabilities"]
    r = rt.run(bundle.args("cat", "/proc/self/status"))
    assert r.returncode == 0, r
    assert int(util.status_field(r.out, "CapBnd"), 16) == _mask(caps["bounding"])
    assert int(util.status_field(r.out, "CapEff"), 16) == _mask(caps["effective"])
    # an ambient capability needs to be permitted and inheritable too; the default spec has
    # no inheritable set, so its ambient list is skipped (as runc does)
    ambient = set(caps.get("ambient", [])) & set(caps.get("inheritable", [])) & set(caps.get("permitted", []))
    assert int(util.status_field(r.out, "CapAmb"), 16) == _mask(ambient)


def test_dropped_capability_is_enforced(rt, bundle):
    # without CAP_CHOWN, root cannot give a file away
    r = rt.run(bundle.sh("touch /tmp/f; chown 1000 /tmp/f; echo rc=$?"))
    assert r.returncode == 0, r
    assert "rc=1" in r.out
    assert "Operation not permitted" in r.err


@pytest.mark.parametrize("nnp,expected", [(True, "1"), (False, "0")])
def test_no_new_privileges(rt, bundle, util, nnp, expected):
    bundle.process["noNewPrivileges"] = nnp
    r = rt.run(bundle.args("cat", "/proc/self/status"))
    assert r.returncode == 0, r
    assert util.status_field(r.out, "NoNewPrivs") == expected


def test_rlimits(rt, bundle):
    bundle.process["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1024},
                                 {"type": "RLIMIT_NPROC", "soft": 300, "hard": 400},
                                 {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}]
    r = rt.run(bundle.args("cat", "/proc/self/limits"))
    assert r.returncode == 0, r
    limits = _limits(r.out)
    assert limits["Max open files"] == ("512", "1024")
    assert limits["Max processes"] == ("300", "400")
    assert limits["Max core file size"] == ("0", "0")


def test_rlimit_above_the_hosts_hard_limit_is_clamped_with_a_warning(rt, bundle):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("the hard nofile limit is unlimited here")
    if _can_raise_rlimits():
        pytest.skip("CAP_SYS_RESOURCE is available: a raised hard limit is not refused here")
    bundle.process["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": hard * 4, "hard": hard * 4}]
    r = rt.run(bundle.args("cat", "/proc/self/limits"))
    assert r.returncode == 0, r
    assert _limits(r.out)["Max open files"] == (str(hard), str(hard))
    assert "RLIMIT_NOFILE" in r.err and "warn" in r.err.lower(), r.err


def _can_raise_rlimits() -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            return bool(int(line.split()[1], 16) & (1 << 24))  # CAP_SYS_RESOURCE
    return False


def test_oom_score_adj(rt, bundle):
    current = int(Path("/proc/self/oom_score_adj").read_text())
    wanted = max(current, 0) + 123
    bundle.process["oomScoreAdj"] = wanted
    r = rt.run(bundle.args("cat", "/proc/self/oom_score_adj"))
    assert r.returncode == 0, r
    assert r.out.strip() == str(wanted)


def test_terminal_over_console_socket(rt, bundle, console_socket):
    sock = console_socket()
    bundle.process["terminal"] = True
    bundle.process["consoleSize"] = {"height": 33, "width": 111}
    bundle.sh("tty; stty size; [ -t 0 ] && [ -t 1 ] && echo stdio-is-a-tty; echo done-$((6*7))")
    cid = rt.new_id()
    rt.create(cid, bundle, "--console-socket", sock.path)
    master = sock.receive()
    rt.start(cid)
    out = sock.read_until(b"done-42").decode(errors="replace")
    assert "done-42" in out, out
    lines = out.replace("\r", "").splitlines()
    assert lines[0].startswith("/dev/pts/") or lines[0] == "/dev/console"
    assert "33 111" in lines
    assert "stdio-is-a-tty" in lines
    assert os.isatty(master)
    rt.wait_status(cid, "stopped")


def test_terminal_input_reaches_the_process(rt, bundle, console_socket):
    sock = console_socket()
    bundle.process["terminal"] = True
    bundle.sh("read line; echo got-$line")
    cid = rt.new_id()
    rt.create(cid, bundle, "--console-socket", sock.path)
    master = sock.receive()
    rt.start(cid)
    os.write(master, b"typed\n")
    out = sock.read_until(b"got-typed").decode(errors="replace")
    assert "got-typed" in out, out


def test_terminal_without_console_socket_is_refused_for_create(rt, bundle):
    bundle.process["terminal"] = True
    cid = rt.new_id()
    r = rt.create(cid, bundle.args("true"), check=False)
    assert r.returncode == 1
    assert "console" in r.err.lower()
    assert rt.status(cid) is None


def test_exec_with_tty_over_console_socket(rt, bundle, console_socket):
    cid, _ = rt.started(bundle.args("sleep", "100"))
    sock = console_socket()
    r = rt.exec(cid, "sh", "-c", "tty; [ -t 1 ] && echo exec-has-a-tty; echo exec-done",
                flags=("-t", "-d", "--console-socket", sock.path))
    assert r.returncode == 0, r
    out = sock.read_until(b"exec-done").decode(errors="replace")
    lines = out.replace("\r", "").splitlines()
    assert lines[0].startswith("/dev/pts/"), out
    assert "exec-has-a-tty" in lines and "exec-done" in lines


def test_exec_process_json_with_terminal(rt, bundle, console_socket, tmp_path):
    cid, _ = rt.started(bundle.args("sleep", "100"))
    sock = console_socket()
    process = dict(bundle.process, terminal=True, args=["sh", "-c", "[ -t 0 ] && echo json-tty-ok"])
    (tmp_path / "p.json").write_text(json.dumps(process))
    r = rt.exec(cid, flags=("--process", str(tmp_path / "p.json"), "-d", "--console-socket", sock.path))
    assert r.returncode == 0, r
    assert b"json-tty-ok" in sock.read_until(b"json-tty-ok")


def test_unknown_rlimit_is_refused(rt, bundle):
    bundle.process["rlimits"] = [{"type": "RLIMIT_NOSUCH", "soft": 1, "hard": 1}]
    cid = rt.new_id()
    r = rt.create(cid, bundle.args("true"), check=False)
    assert r.returncode != 0
    assert "RLIMIT_NOSUCH" in r.err
    assert rt.status(cid) is None


def test_unknown_capability_is_ignored_with_a_warning(rt, bundle, util):
    # runc (since 1.0) skips capabilities it does not know, so that a config written for a
    # newer kernel still runs, and says so
    for kind in bundle.process["capabilities"].values():
        kind.append("CAP_NO_SUCH_THING")
    r = rt.run(bundle.args("cat", "/proc/self/status"))
    assert r.returncode == 0, r
    assert "CAP_NO_SUCH_THING" in r.err
    assert int(util.status_field(r.out, "CapBnd"), 16) == _mask(bundle.process["capabilities"]["bounding"][:-1])


def test_missing_cwd_is_created(rt, bundle):
    # runc makes the working directory when the rootfs lacks it
    bundle.process["cwd"] = "/work/dir"
    r = rt.run(bundle.args("pwd"))
    assert r.returncode == 0, r
    assert r.out.strip() == "/work/dir"
    assert (bundle.rootfs / "work" / "dir").is_dir()


def test_signals_reach_the_process_with_default_dispositions(rt, bundle, util):
    # Python ignores SIGPIPE and SIGXFSZ; a process started from it must not inherit that
    # (`yes | head -1` would never end), nor a blocked mask.
    r = rt.run(bundle.args("cat", "/proc/self/status"))
    assert r.returncode == 0, r
    assert int(util.status_field(r.out, "SigIgn"), 16) == 0
    assert int(util.status_field(r.out, "SigBlk"), 16) == 0
    r = rt.run(bundle.sh("yes | head -1"))
    assert (r.returncode, r.out.strip()) == (0, "y"), r
