"""linux.namespaces: each kind made new, user namespaces with id mappings, time offsets,
and joining an existing namespace by path."""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

NS_FILES = {"pid": "pid", "network": "net", "ipc": "ipc", "uts": "uts", "mount": "mnt", "cgroup": "cgroup",
            "user": "user", "time": "time"}


def _ns_inode(path: str) -> str:
    return os.readlink(path)  # e.g. "net:[4026531840]"


@pytest.mark.parametrize("kind", ["pid", "network", "ipc", "uts", "mount", "cgroup"])
def test_each_namespace_is_new(rt, bundle, kind):
    bundle.add_namespace(kind)
    name = NS_FILES[kind]
    r = rt.run(bundle.args("readlink", f"/proc/self/ns/{name}"))
    assert r.returncode == 0, r
    assert r.out.strip() != _ns_inode(f"/proc/self/ns/{name}")


def _mounts_below(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(path))]


def _without_mount_namespace(bundle):
    bundle.remove_namespace("mount")
    bundle.linux.pop("maskedPaths", None)
    bundle.linux.pop("readonlyPaths", None)


def test_without_a_mount_namespace_the_container_shares_ours(rt, bundle):
    """As runc: the mounts of config.json are made in the caller's namespace, the process is
    chrooted into the rootfs (no pivot_root); unlike runc, delete takes those mounts away."""
    _without_mount_namespace(bundle)
    bundle.config["root"]["readonly"] = True
    bundle.args("sleep", "100")
    marker = f"only-in-the-rootfs-{secrets.token_hex(4)}"
    (bundle.rootfs / marker).touch()
    cid = rt.new_id()
    rt.create(cid, bundle)
    assert _mounts_below(bundle.rootfs), "the container's mounts are in our namespace"
    rt.start(cid)
    out = rt.exec(cid, "cat", "/proc/self/mountinfo").out
    assert rt.exec(cid, "readlink", "/proc/self/ns/mnt").out.strip() == _ns_inode("/proc/self/ns/mnt")
    assert rt.exec(cid, "test", "-e", f"/{marker}").returncode == 0, "an exec's root is the rootfs"
    assert rt.exec(cid, "touch", "/x").returncode != 0, "root.readonly holds"
    assert rt.exec(cid, "sh", "-c", "ps -o pid,comm | grep -c sleep").out.strip() == "1", out
    rt.kill(cid, "KILL")
    rt.wait_status(cid, "stopped")
    rt.delete(cid)
    assert _mounts_below(bundle.rootfs) == [], "delete leaves none of its mounts behind"


def test_without_a_mount_namespace_run_leaves_no_mount(rt, bundle):
    _without_mount_namespace(bundle)
    r = rt.run(bundle.sh("test -e /proc/self/status && test -c /dev/null && echo ok"))
    assert r.returncode == 0 and r.out.strip() == "ok", r
    assert _mounts_below(bundle.rootfs) == []


@pytest.mark.parametrize("key", ["maskedPaths", "readonlyPaths"])
def test_without_a_mount_namespace_masked_or_read_only_paths_are_refused(rt, bundle, key):
    """runc's check and message: masking would change the caller's own /proc and /sys."""
    bundle.remove_namespace("mount")
    bundle.linux["maskedPaths" if key == "readonlyPaths" else "readonlyPaths"] = []
    bundle.linux[key] = ["/proc/kcore"]
    cid = rt.new_id()
    r = rt.create(cid, bundle.args("true"), check=False)
    assert r.returncode == 1
    assert "unable to restrict sys entries without a private MNT namespace" in r.err
    assert len(r.err.strip().splitlines()) == 1
    assert rt.status(cid) is None
    assert _mounts_below(bundle.rootfs) == []


@pytest.mark.parametrize("kind", ["network", "ipc", "uts", "cgroup"])
def test_a_namespace_left_out_is_the_hosts(rt, bundle, kind):
    bundle.remove_namespace(kind)
    if kind == "uts":
        del bundle.config["hostname"]
    name = NS_FILES[kind]
    r = rt.run(bundle.args("readlink", f"/proc/self/ns/{name}"))
    assert r.returncode == 0, r
    assert r.out.strip() == _ns_inode(f"/proc/self/ns/{name}")


def test_pid_namespace_makes_the_process_pid_1(rt, bundle):
    r = rt.run(bundle.sh("echo $$; ls -d /proc/[0-9]*"))
    assert r.returncode == 0, r
    lines = r.out.split()
    assert lines[0] == "1"
    # the shell and ls: nothing of the host's is visible
    assert len(lines[1:]) <= 2 and "/proc/1" in lines[1:]


def test_network_namespace_has_only_lo(rt, bundle):
    r = rt.run(bundle.sh("ls /sys/class/net; tail -n +3 /proc/net/dev | cut -d: -f1"))
    assert r.returncode == 0, r
    assert r.out.split() == ["lo", "lo"]


def test_ipc_namespace_hides_host_shm(rt, bundle):
    key = 0x5A4D0000 + secrets.randbelow(0xFFFF)
    shmid = _shmget(key)
    try:
        r = rt.run(bundle.args("cat", "/proc/sysvipc/shm"))
        assert r.returncode == 0, r
        assert str(shmid) not in r.out.split()
        host = Path("/proc/sysvipc/shm").read_text().split()
        assert str(shmid) in host
    finally:
        _shmrm(shmid)


def _shmget(key: int) -> int:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    shmid = libc.shmget(key, 4096, 0o1600)  # IPC_CREAT | 0600
    assert shmid >= 0, os.strerror(ctypes.get_errno())
    return shmid


def _shmrm(shmid: int) -> None:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmctl(shmid, 0, None)  # IPC_RMID


def test_uts_namespace_hostname(rt, bundle):
    host_name = os.uname().nodename
    bundle.config["hostname"] = "box-host"
    r = rt.run(bundle.sh("hostname; cat /proc/sys/kernel/hostname"))
    assert r.returncode == 0, r
    assert r.out.split() == ["box-host", "box-host"]
    assert os.uname().nodename == host_name


def test_uts_namespace_domainname(rt, bundle, runtime_version):
    if runtime_version[0] == "runc" and runtime_version[1] < (1, 2):
        pytest.skip("runc before 1.2 ignores domainname")
    host_domain = Path("/proc/sys/kernel/domainname").read_text()
    bundle.config["domainname"] = "box.example"
    r = rt.run(bundle.args("cat", "/proc/sys/kernel/domainname"))
    assert r.returncode == 0, r
    assert r.out.split() == ["box.example"]
    assert Path("/proc/sys/kernel/domainname").read_text() == host_domain


def test_hostname_without_uts_namespace_is_refused(rt, bundle):
    bundle.remove_namespace("uts")
    bundle.config["hostname"] = "not-the-hosts"
    cid = rt.new_id()
    r = rt.create(cid, bundle.args("true"), check=False)
    assert r.returncode == 1
    assert "UTS" in r.err.upper() or "uts" in r.err
    assert rt.status(cid) is None
    assert os.uname().nodename != "not-the-hosts"


def test_mount_namespace_keeps_container_mounts_from_the_host(rt, bundle):
    caps = bundle.process["capabilities"]
    for kind in caps:
        caps[kind].append("CAP_SYS_ADMIN")
    r = rt.run(bundle.sh("mkdir -p /mnt/t && mount -t tmpfs inner-tmpfs /mnt/t && grep -c inner-tmpfs /proc/self/mountinfo"))
    assert r.returncode == 0, r
    assert r.out.strip() == "1"
    assert "inner-tmpfs" not in Path("/proc/self/mountinfo").read_text()


def test_cgroup_namespace_shows_root(rt, bundle):
    bundle.add_namespace("cgroup")
    r = rt.run(bundle.args("cat", "/proc/self/cgroup"))
    assert r.returncode == 0, r
    lines = r.out.splitlines()
    assert lines
    for line in lines:
        assert line.split(":", 2)[2] == "/", line


@pytest.fixture
def userns_bundle(make_bundle):
    """A bundle in a directory every uid can traverse (pytest's tmp dirs are 0700), with a
    rootfs owned by the mapped root, host uid/gid 100000."""
    base = tempfile.mkdtemp(prefix="sampan-userns-", dir="/tmp")
    os.chmod(base, 0o711)
    try:
        b = make_bundle("bundle", base)
        os.chmod(b.path, 0o711)
        for dirpath, dirnames, filenames in os.walk(b.rootfs):
            for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
                os.lchown(name, 100000, 100000)
        b.add_namespace("user")
        b.linux["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        b.linux["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        yield b
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_user_namespace_maps_root(rt, userns_bundle):
    b = userns_bundle
    r = rt.run(b.sh("id -u; id -g; cat /proc/self/uid_map; touch /made-inside; echo x > /dev/null"))
    assert r.returncode == 0, r
    lines = r.out.splitlines()
    assert lines[:2] == ["0", "0"]
    assert lines[2].split() == ["0", "100000", "65536"]
    st = (b.rootfs / "made-inside").stat()
    assert (st.st_uid, st.st_gid) == (100000, 100000)


def test_user_namespace_unmapped_host_root_is_nobody(rt, userns_bundle, tmp_path):
    b = userns_bundle
    host_file = Path(tempfile.mkdtemp(prefix="sampan-userns-src-", dir="/tmp"))
    try:
        os.chmod(host_file, 0o755)
        (host_file / "owned-by-host-root").write_text("x")
        b.add_mount("/hostdir", "bind", str(host_file), ["rbind", "ro"])
        r = rt.run(b.sh("stat -c '%u %g' /hostdir/owned-by-host-root"))
        assert r.returncode == 0, r
        assert r.out.split() == ["65534", "65534"]
    finally:
        shutil.rmtree(host_file, ignore_errors=True)


def test_time_namespace_offsets(rt, bundle, runtime_features):
    if not Path("/proc/self/ns/time").exists():
        pytest.skip("the kernel has no time namespaces")
    if "time" not in (runtime_features.get("linux") or {}).get("namespaces", []):
        pytest.skip("the runtime does not list time namespaces in its features")
    day = 86400
    bundle.add_namespace("time")
    bundle.linux["timeOffsets"] = {"monotonic": {"secs": 1000 * day, "nanosecs": 0},
                                   "boottime": {"secs": 2000 * day, "nanosecs": 0}}
    r = rt.run(bundle.args("cat", "/proc/uptime"))
    assert r.returncode == 0, r
    uptime = float(r.out.split()[0])
    host_uptime = float(Path("/proc/uptime").read_text().split()[0])
    assert 2000 * day - 5 <= uptime - host_uptime <= 2000 * day + 60


@pytest.fixture(scope="module")
def run_netns_mounted() -> None:
    """/run/netns as `ip netns add` leaves it: a mount point, made before the test's host
    snapshot so the test is not charged with it. Never unmounted: other tests and processes
    keep their namespaces there, as iproute2 itself never takes it away."""
    if not _is_mountpoint("/run/netns"):
        name = f"sampan-test-{os.getpid()}-{secrets.token_hex(4)}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        subprocess.run(["ip", "netns", "del", name], check=True)


def test_join_network_namespace_made_with_ip_netns(rt, bundle, run_netns_mounted):
    name = f"sampan-test-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "add", "vjoin0", "type", "veth", "peer", "name", "vjoin1"],
                       check=True)
        bundle.add_namespace("network", f"/run/netns/{name}")
        r = rt.run(bundle.sh("readlink /proc/self/ns/net; ls /sys/class/net"))
        assert r.returncode == 0, r
        lines = r.out.split()
        assert lines[0] == f"net:[{os.stat(f'/run/netns/{name}').st_ino}]"
        assert {"lo", "vjoin0", "vjoin1"} <= set(lines[1:])
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _is_mountpoint(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def test_join_network_namespace_of_another_container(rt, bundle, make_bundle):
    first, pid = rt.started(bundle.args("sleep", "100"))
    first_net = os.readlink(f"/proc/{pid}/ns/net")
    second = make_bundle("second")
    second.add_namespace("network", f"/proc/{pid}/ns/net")
    r = rt.run(second.args("readlink", "/proc/self/ns/net"))
    assert r.returncode == 0, r
    assert r.out.strip() == first_net
    assert rt.status(first) == "running"
