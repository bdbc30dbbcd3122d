"""Escapes a runtime must close: leaked fds (CVE-2024-21626), the runtime's own binary
reachable through /proc/<pid>/exe (CVE-2019-5736), and symlinks in the rootfs that would
send a mount onto the host."""
from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from pathlib import Path

import pytest

RUNTIME = os.environ.get("SAMPAN_TEST_RUNTIME", "/usr/local/bin/sampan-runc")


def _host_binaries() -> set[str]:
    """The runtime's binary and, for a script, its interpreter (for sampan-runc, the venv's
    python), each by its real path."""
    real = os.path.realpath(RUNTIME)
    found = {real}
    with open(real, "rb") as f:
        first = f.readline(4096)
    if first.startswith(b"#!"):
        words = first[2:].decode().split()
        interp = words[1] if os.path.basename(words[0]) == "env" and len(words) > 1 else words[0]
        found.add(os.path.realpath(shutil.which(interp) or interp))
    return found


def _sha256(path: str, limit: int | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read() if limit is None else f.read(limit))
    return h.hexdigest()


def test_only_stdio_fds_reach_the_process(rt, bundle):
    r = rt.run(bundle.args("ls", "/proc/self/fd"))
    assert r.returncode == 0, r
    fds = sorted(int(x) for x in r.out.split())
    assert fds[:3] == [0, 1, 2]
    assert len(fds) <= 4, f"fds leaked into the container: {fds}"  # 3: the directory ls reads


def test_only_stdio_fds_reach_an_exec(rt, bundle):
    cid, _ = rt.started(bundle.args("sleep", "100"))
    r = rt.exec(cid, "ls", "/proc/self/fd")
    assert r.returncode == 0, r
    fds = sorted(int(x) for x in r.out.split())
    assert fds[:3] == [0, 1, 2]
    assert len(fds) <= 4, f"fds leaked into the exec'd process: {fds}"


def test_init_has_only_stdio_fds(rt, bundle):
    cid, pid = rt.started(bundle.args("sleep", "100"))
    assert sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd")) == [0, 1, 2]


def test_cwd_through_a_leaked_fd_gives_no_host_access(rt, bundle):
    marker = Path(f"/tmp/sampan-cve-2024-21626-{secrets.token_hex(4)}")
    secret = f"host-secret-{secrets.token_hex(8)}"
    marker.write_text(secret)
    try:
        climb = "../" * 12 + f"tmp/{marker.name}"
        bundle.sh(f"cat {climb} 2>/dev/null; pwd -P; ls -a")
        for n in range(3, 12):
            bundle.process["cwd"] = f"/proc/self/fd/{n}"
            r = rt.run(bundle)
            assert secret not in r.out, f"cwd /proc/self/fd/{n} reached the host: {r!r}"
            if r.returncode == 0:
                # the process ran: its cwd must be inside the container's root
                assert "pytest-of" not in r.out and "sys/fs/cgroup" not in r.out, r
    finally:
        marker.unlink()


def test_exec_cwd_through_a_leaked_fd_gives_no_host_access(rt, bundle):
    marker = Path(f"/tmp/sampan-cve-2024-21626-{secrets.token_hex(4)}")
    secret = f"host-secret-{secrets.token_hex(8)}"
    marker.write_text(secret)
    try:
        cid, _ = rt.started(bundle.args("sleep", "100"))
        climb = "../" * 12 + f"tmp/{marker.name}"
        for n in range(3, 12):
            r = rt.exec(cid, "sh", "-c", f"cat {climb} 2>/dev/null; pwd -P", flags=("--cwd", f"/proc/self/fd/{n}"))
            assert secret not in r.out, f"exec --cwd /proc/self/fd/{n} reached the host: {r!r}"
    finally:
        marker.unlink()


def test_runtime_binary_is_out_of_reach_during_exec(rt, bundle, util):
    """CVE-2019-5736: while `exec` sets a process up in the container, nothing in the
    container can readlink or open /proc/<pid>/exe of a process running the host's binary."""
    hosts = _host_binaries()
    before = {b: _sha256(b) for b in hosts}
    heads = {_sha256(b, 65536): b for b in hosts}
    bundle.sh(
        "touch /ready; while [ ! -e /stop ]; do for f in /proc/[0-9]*/exe; do "
        "l=$(readlink $f 2>/dev/null) && echo \"L $f $l\" >> /seen || echo \"D $f\" >> /seen; "
        "h=$(head -c 65536 $f 2>/dev/null | sha256sum) && echo \"O $f ${h%% *}\" >> /seen; "
        "done; done")
    cid, _ = rt.started(bundle)
    seen = bundle.rootfs / "seen"
    util.wait_until(lambda: (bundle.rootfs / "ready").exists(), what="the watcher to start")
    for _ in range(15):
        r = rt.exec(cid, "true")
        assert r.returncode == 0, r
    (bundle.rootfs / "stop").write_text("")
    rt.wait_status(cid, "stopped")
    lines = seen.read_text().splitlines() if seen.exists() else []
    assert lines, "the watcher in the container saw nothing"
    for line in lines:
        kind, path, *rest = line.split(" ", 2)
        value = rest[0] if rest else ""
        if kind == "L":
            assert value not in hosts and "python" not in value, f"readlink {path} -> {value}"
        if kind == "O":
            assert value not in heads, f"opened {path}: the host's {heads[value]}"
    for b, digest in before.items():
        assert _sha256(b) == digest, f"{b} changed"


@pytest.mark.parametrize("link", ["../../../../tmp", "/tmp"])
def test_mount_through_a_symlink_stays_in_the_rootfs(rt, bundle, tmp_path, link):
    name = f"sampan-escape-{secrets.token_hex(4)}"
    shutil.rmtree(bundle.rootfs / "etc")
    (bundle.rootfs / "etc").symlink_to(link)
    src = tmp_path / "src"
    src.mkdir()
    (src / "payload").write_text("bound\n")
    bundle.add_mount(f"/etc/{name}", "tmpfs", "tmpfs", ["size=1m"])
    bundle.add_mount(f"/etc/{name}-bind", "bind", str(src), ["rbind", "ro"])
    host_relative = os.path.normpath(os.path.join(bundle.rootfs, "etc", link))
    r = rt.run(bundle.sh(f"cat /etc/{name}-bind/payload; grep -o ' /[^ ]*{name}[^ ]* ' /proc/self/mountinfo"))
    assert r.returncode == 0, r
    lines = r.out.split()
    assert lines[0] == "bound"
    assert sorted(lines[1:]) == [f"/tmp/{name}", f"/tmp/{name}-bind"]
    assert (bundle.rootfs / "tmp" / name).is_dir()
    for host_dir in ("/tmp", host_relative):
        assert not os.path.lexists(os.path.join(host_dir, name)), f"a mount point was made on the host in {host_dir}"
        assert not os.path.lexists(os.path.join(host_dir, name + "-bind"))
    assert name not in Path("/proc/self/mountinfo").read_text()


def test_device_path_through_a_symlink_stays_in_the_rootfs(rt, bundle):
    name = f"sampan-dev-{secrets.token_hex(4)}"
    (bundle.rootfs / "devlink").symlink_to("/tmp")
    bundle.linux["devices"] = [{"path": f"/dev/../devlink/{name}", "type": "c", "major": 1, "minor": 3,
                                "fileMode": 0o666}]
    cid = rt.new_id()
    rt.create(cid, bundle.args("true"), check=False)  # refused or made inside: either is fine
    assert not os.path.lexists(f"/tmp/{name}"), "a device node was made on the host"


def test_a_created_init_is_out_of_reach_of_its_pid_namespace(rt, bundle, make_bundle):
    """CVE-2019-5736 again, for create: a container created (not started) into the pid
    namespace of a running one waits there, visible to it, until start. Its exe must not
    lead to the host's binary."""
    hosts = _host_binaries()
    heads = {_sha256(b, 65536): b for b in hosts}
    first, first_pid = rt.started(bundle.args("sleep", "100"))
    second = make_bundle("second").args("true")
    second.add_namespace("pid", f"/proc/{first_pid}/ns/pid")
    cid = rt.new_id()
    rt.create(cid, second)
    r = rt.exec(first, "sh", "-c", "for f in /proc/[0-9]*/exe; do "
                "l=$(readlink $f 2>/dev/null) && echo \"L $f $l\" || echo \"D $f\"; "
                "h=$(head -c 65536 $f 2>/dev/null | sha256sum) && echo \"O $f ${h%% *}\"; done")
    assert r.returncode == 0, r
    lines = r.out.splitlines()
    assert len(lines) >= 3, r  # sleep, this shell and the created init at least
    for line in lines:
        kind, path, *rest = line.split(" ", 2)
        value = rest[0] if rest else ""
        if kind == "L":
            assert value not in hosts and "python" not in value, f"readlink {path} -> {value}"
        if kind == "O":
            assert value not in heads, f"opened {path}: the host's {heads[value]}"
