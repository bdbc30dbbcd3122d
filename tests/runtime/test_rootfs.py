"""The container's root filesystem: read-only root, the default mounts and their options,
bind and tmpfs mounts, mount propagation, --no-pivot, /dev, masked and read-only paths,
sysctls and a read-only /sys."""
from __future__ import annotations

import ctypes
import shutil
import os
from pathlib import Path

import pytest

_libc = ctypes.CDLL(None, use_errno=True)
MNT_DETACH = 2


def _mount(source: str, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    rc = _libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                     data.encode() if data else None)
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount {source} {target}: {os.strerror(e)}")


MS_REC, MS_SHARED, MS_PRIVATE, MS_BIND = 0x4000, 1 << 20, 1 << 18, 0x1000


@pytest.fixture
def host_tree(tmp_path):
    """A mount tree of our own on the host: a tmpfs at tmp_path/tree, recursively shared so
    propagation can be observed without touching the host's real mounts. Detached after."""
    tree = tmp_path / "tree"
    tree.mkdir()
    _mount("sampan-test-tree", str(tree), "tmpfs", 0, "mode=755")
    try:
        _mount("none", str(tree), None, MS_REC | MS_SHARED)
        yield tree
    finally:
        for _ in range(20):  # everything stacked under it, propagated back from containers included
            with open("/proc/self/mountinfo") as f:
                under = [line.split()[4] for line in f if line.split()[4].startswith(str(tree))]
            if not under:
                break
            for mp in sorted(under, key=len, reverse=True):
                _libc.umount2(mp.encode(), MNT_DETACH)


def _add_caps(bundle, *caps: str) -> None:
    for kind, names in bundle.process["capabilities"].items():
        names.extend(c for c in caps if c not in names)


def _mountinfo(rt, bundle, util, *flags: str) -> list[dict]:
    r = rt.run(bundle.args("cat", "/proc/self/mountinfo"), *flags)
    assert r.returncode == 0, r
    return util.parse_mountinfo(r.out)


def test_readonly_root(rt, bundle):
    bundle.config["root"]["readonly"] = True
    r = rt.run(bundle.sh("touch /x; echo rc=$?; touch /tmp/x; echo tmp-rc=$?"))
    assert r.returncode == 0, r
    assert "Read-only file system" in r.err
    assert "rc=1" in r.out and "tmp-rc=1" in r.out
    assert not (bundle.rootfs / "x").exists()


def test_writable_root(rt, bundle):
    r = rt.run(bundle.sh("echo hi > /written"))
    assert r.returncode == 0, r
    assert (bundle.rootfs / "written").read_text() == "hi\n"


def test_readonly_root_mount_is_ro_in_mountinfo(rt, bundle, util):
    bundle.config["root"]["readonly"] = True
    root = util.mount_at(_mountinfo(rt, bundle, util), "/")
    assert "ro" in root["opts"]


def test_default_mounts_and_their_options(rt, bundle, util):
    mounts = _mountinfo(rt, bundle, util)

    def at(mp):
        m = util.mount_at(mounts, mp)
        assert m is not None, f"nothing mounted at {mp}"
        return m

    proc = at("/proc")
    assert proc["fstype"] == "proc"

    dev = at("/dev")
    assert dev["fstype"] == "tmpfs"
    assert "nosuid" in dev["opts"] and "relatime" not in dev["opts"] and "noatime" not in dev["opts"]  # strictatime
    assert {"mode=755", "size=65536k"} <= dev["superopts"]

    pts = at("/dev/pts")
    assert pts["fstype"] == "devpts"
    assert {"nosuid", "noexec"} <= pts["opts"]
    assert {"mode=620", "ptmxmode=666", "gid=5"} <= pts["superopts"]

    shm = at("/dev/shm")
    assert shm["fstype"] == "tmpfs"
    assert {"nosuid", "noexec", "nodev"} <= shm["opts"]
    assert "size=65536k" in shm["superopts"]  # mode=1777 is tmpfs's default: mountinfo omits it

    mq = at("/dev/mqueue")
    assert mq["fstype"] == "mqueue"
    assert {"nosuid", "noexec", "nodev"} <= mq["opts"]

    sys = at("/sys")
    assert sys["fstype"] == "sysfs"
    assert {"ro", "nosuid", "noexec", "nodev"} <= sys["opts"]

    cg = at("/sys/fs/cgroup")  # on a v1 host, a tmpfs (rw in runc) holding one ro mount per hierarchy
    assert {"nosuid", "noexec", "nodev"} <= cg["opts"]
    below = [m for m in mounts if m["mountpoint"].startswith("/sys/fs/cgroup/")]
    for hierarchy in util.cgroup_mountpoints():
        name = hierarchy.removeprefix("/sys/fs/cgroup/")
        if hierarchy.startswith("/sys/fs/cgroup/") and not name.startswith("unified"):
            m = util.mount_at(below, hierarchy)
            assert m is not None, f"cgroup hierarchy {hierarchy} is not mounted in the container"
            assert m["fstype"] == "cgroup" and "ro" in m["opts"], m


def test_cgroup_mount_shows_the_containers_own_cgroup(rt, bundle):
    bundle.linux.setdefault("resources", {})["memory"] = {"limit": 32 << 20}
    r = rt.run(bundle.sh("cat /sys/fs/cgroup/memory/memory.limit_in_bytes"))
    assert r.returncode == 0, r
    assert r.out.strip() == str(32 << 20)


def test_bind_mount_readonly(rt, bundle, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "file").write_text("from-host\n")
    bundle.add_mount("/data", "bind", str(src), ["rbind", "ro"])
    r = rt.run(bundle.sh("cat /data/file; echo x > /data/file; echo rc=$?; touch /data/new; echo rc=$?"))
    assert r.returncode == 0, r
    assert r.out.splitlines() == ["from-host", "rc=1", "rc=1"]
    assert "Read-only file system" in r.err
    assert (src / "file").read_text() == "from-host\n"
    assert not (src / "new").exists()


def test_bind_mount_readwrite_writes_through(rt, bundle, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    bundle.add_mount("/data", "bind", str(src), ["rbind", "rw"])
    r = rt.run(bundle.sh("echo inside > /data/out"))
    assert r.returncode == 0, r
    assert (src / "out").read_text() == "inside\n"


def test_bind_mount_of_a_file(rt, bundle, tmp_path):
    src = tmp_path / "single"
    src.write_text("one file\n")
    bundle.add_mount("/etc/single", "bind", str(src), ["bind", "ro"])
    r = rt.run(bundle.args("cat", "/etc/single"))
    assert r.returncode == 0, r
    assert r.out == "one file\n"


@pytest.mark.parametrize("option,sees_submount", [("bind", False), ("rbind", True)])
def test_bind_versus_rbind(rt, bundle, host_tree, option, sees_submount):
    (host_tree / "top-file").write_text("top\n")
    sub = host_tree / "sub"
    sub.mkdir()
    _mount("sampan-test-sub", str(sub), "tmpfs")
    (sub / "sub-file").write_text("sub\n")
    bundle.add_mount("/data", "bind", str(host_tree), [option])
    r = rt.run(bundle.sh("cat /data/top-file; ls /data/sub"))
    assert r.returncode == 0, r
    assert r.out.startswith("top\n")
    assert ("sub-file" in r.out) == sees_submount


def test_tmpfs_mount_with_mode_and_size(rt, bundle, util):
    bundle.add_mount("/scratch", "tmpfs", "tmpfs", ["nosuid", "nodev", "mode=1770", "size=1m"])
    r = rt.run(bundle.sh("stat -c %a /scratch; grep ' /scratch ' /proc/self/mountinfo; "
                         "dd if=/dev/zero of=/scratch/big bs=1k count=2048 2>&1; echo dd-rc=$?"))
    assert r.returncode == 0, r
    lines = r.out.splitlines()
    assert lines[0] == "1770"
    m = util.parse_mountinfo(lines[1])[0]
    assert m["fstype"] == "tmpfs"
    assert {"nosuid", "nodev"} <= m["opts"]
    assert {"size=1024k", "mode=1770"} <= m["superopts"]
    assert "No space left on device" in r.out and "dd-rc=1" in r.out


def test_bind_rslave_receives_host_mounts(rt, bundle, host_tree, util):
    bundle.add_mount("/data", "bind", str(host_tree), ["rbind", "rslave"])
    bundle.sh("while [ ! -e /data/late/hello ]; do sleep 0.02; done; cat /data/late/hello; "
              "grep ' /data ' /proc/self/mountinfo")
    cid = rt.new_id()
    created = rt.create(cid, bundle)
    rt.start(cid)
    late = host_tree / "late"
    late.mkdir()
    _mount("sampan-test-late", str(late), "tmpfs")
    (late / "hello").write_text("propagated\n")
    rt.wait_status(cid, "stopped")
    lines = created.out.splitlines()
    assert lines[0] == "propagated"
    assert any(o.startswith("master:") for o in util.parse_mountinfo(lines[1])[0]["optional"])


def test_bind_rslave_keeps_container_mounts_from_the_host(rt, bundle, host_tree):
    _add_caps(bundle, "CAP_SYS_ADMIN")
    (host_tree / "inner").mkdir()
    bundle.add_mount("/data", "bind", str(host_tree), ["rbind", "rslave"])
    r = rt.run(bundle.sh("mount -t tmpfs from-container /data/inner && touch /data/inner/made"))
    assert r.returncode == 0, r
    assert not (host_tree / "inner" / "made").exists()


def test_bind_rshared_propagates_container_mounts_to_the_host(rt, bundle, host_tree):
    _add_caps(bundle, "CAP_SYS_ADMIN")
    (host_tree / "inner").mkdir()
    bundle.linux["rootfsPropagation"] = "rshared"
    bundle.add_mount("/data", "bind", str(host_tree), ["rbind", "rshared"])
    r = rt.run(bundle.sh("mount -t tmpfs from-container /data/inner && echo made > /data/inner/made"))
    assert r.returncode == 0, r
    assert (host_tree / "inner" / "made").read_text() == "made\n"


def test_bind_rprivate_sees_no_later_host_mounts(rt, bundle, host_tree):
    bundle.add_mount("/data", "bind", str(host_tree), ["rbind", "rprivate"])
    bundle.sh("while [ ! -e /data/go ]; do sleep 0.02; done; ls /data/late")
    cid = rt.new_id()
    created = rt.create(cid, bundle)
    rt.start(cid)
    late = host_tree / "late"
    late.mkdir()
    _mount("sampan-test-late", str(late), "tmpfs")
    (late / "hello").write_text("not for the container\n")
    (host_tree / "go").write_text("")
    rt.wait_status(cid, "stopped")
    assert "hello" not in created.out


@pytest.mark.parametrize("propagation,receives", [("rslave", True), ("rprivate", False), ("rshared", True)])
def test_rootfs_propagation(rt, bundle, host_tree, propagation, receives):
    # A bind mount without a propagation option of its own takes the one rootfsPropagation
    # gave the container's copy of the host's mounts.
    bundle.linux["rootfsPropagation"] = propagation
    bundle.add_mount("/data", "bind", str(host_tree), ["rbind"])
    bundle.sh("while [ ! -e /data/go ]; do sleep 0.02; done; ls /data/late")
    cid = rt.new_id()
    created = rt.create(cid, bundle)
    rt.start(cid)
    late = host_tree / "late"
    late.mkdir()
    _mount("sampan-test-late", str(late), "tmpfs")
    (late / "hello").write_text("from the host\n")
    (host_tree / "go").write_text("")
    rt.wait_status(cid, "stopped")
    assert ("hello" in created.out) == receives, created


def test_no_pivot(rt, bundle, util):
    (bundle.rootfs / "marker").write_text("in the rootfs\n")
    bundle.sh("cat /marker; ls /; cat /proc/self/mountinfo")
    r = rt.run(bundle, "--no-pivot")
    assert r.returncode == 0, r
    assert r.out.startswith("in the rootfs\n")
    assert "pytest-of" not in r.out.split("\n", 2)[1]
    mounts = util.parse_mountinfo(r.out)
    assert util.mount_at(mounts, "/proc")["fstype"] == "proc"


def test_default_devices(rt, bundle):
    devices = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0)}
    r = rt.run(bundle.sh("for d in " + " ".join(devices) + "; do stat -c '%n %F %t %T %a %u %g' /dev/$d; done"))
    assert r.returncode == 0, r
    seen = {}
    for line in r.out.splitlines():
        name, rest = line.split(" ", 1)
        seen[name.removeprefix("/dev/")] = rest
    for name, (major, minor) in devices.items():
        assert seen[name] == f"character special file {major:x} {minor:x} 666 0 0", name


def test_default_devices_work(rt, bundle):
    r = rt.run(bundle.sh("echo x > /dev/null && head -c 4 /dev/zero | od -An -tx1 && head -c 8 /dev/urandom | wc -c"))
    assert r.returncode == 0, r
    assert r.out.split() == ["00", "00", "00", "00", "8"]


def test_linux_devices_with_mode_and_owner(rt, bundle):
    bundle.linux["devices"] = [{"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3,
                                "fileMode": 0o640, "uid": 1000, "gid": 1001}]
    r = rt.run(bundle.args("stat", "-c", "%F %t %T %a %u %g", "/dev/mynull"))
    assert r.returncode == 0, r
    assert r.out.strip() == "character special file 1 3 640 1000 1001"


def test_dev_symlinks(rt, bundle):
    links = {"/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0", "/dev/stdout": "/proc/self/fd/1",
             "/dev/stderr": "/proc/self/fd/2", "/dev/ptmx": "pts/ptmx"}
    r = rt.run(bundle.sh("for l in " + " ".join(links) + "; do echo $l $(readlink $l); done"))
    assert r.returncode == 0, r
    got = dict(line.split() for line in r.out.splitlines())
    assert got == links


def test_dev_pts_is_a_new_instance(rt, bundle):
    host_dev = os.stat("/dev/pts").st_dev
    r = rt.run(bundle.sh("ls /dev/pts; stat -c %d /dev/pts"))
    assert r.returncode == 0, r
    lines = r.out.split()
    assert lines[:-1] == ["ptmx"]
    assert int(lines[-1]) != host_dev


def test_masked_files_read_empty(rt, bundle):
    # /proc/kcore is masked by the default spec too, but this kernel may be built without it.
    files = [f for f in ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug")
             if os.path.exists(f) and f in bundle.linux["maskedPaths"]]
    assert files
    r = rt.run(bundle.sh("for f in " + " ".join(files) + "; do echo $f $(cat $f | wc -c); done"))
    assert r.returncode == 0, r
    assert r.out.splitlines() == [f"{f} 0" for f in files]


def test_masked_directory_is_an_empty_readonly_tmpfs(rt, bundle, util):
    secret = bundle.rootfs / "secret"
    secret.mkdir()
    (secret / "key").write_text("do not read\n")
    bundle.linux["maskedPaths"] = bundle.linux.get("maskedPaths", []) + ["/secret"]
    r = rt.run(bundle.sh("ls -A /secret | wc -l; cat /secret/key; touch /secret/new; echo rc=$?; "
                         "grep ' /secret ' /proc/self/mountinfo"))
    assert r.returncode == 0, r
    lines = r.out.splitlines()
    assert lines[0].strip() == "0"
    assert lines[1] == "rc=1"
    m = util.parse_mountinfo(lines[2])[0]
    assert m["fstype"] == "tmpfs" and "ro" in m["opts"]
    assert "do not read" not in r.out
    assert (secret / "key").read_text() == "do not read\n"


def test_readonly_paths(rt, bundle, util):
    r = rt.run(bundle.sh("echo 1 > /proc/sys/net/ipv4/ip_forward; echo rc=$?; "
                         "grep ' /proc/sys ' /proc/self/mountinfo"))
    assert r.returncode == 0, r
    assert "rc=1" in r.out
    assert "Read-only file system" in r.err
    m = util.parse_mountinfo(r.out.split("\n", 1)[1])[0]
    assert "ro" in m["opts"]


def test_sys_is_readonly(rt, bundle):
    r = rt.run(bundle.sh("echo 1 > /sys/kernel/uevent_helper; echo rc=$?; mkdir /sys/x; echo rc=$?"))
    assert r.returncode == 0, r
    assert r.out.split() == ["rc=1", "rc=1"]
    assert "Read-only file system" in r.err


def test_sysctl_in_new_network_namespace(rt, bundle):
    host = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    bundle.linux["sysctl"] = {"net.ipv4.ip_forward": "1", "net.ipv4.conf.all.rp_filter": "2"}
    r = rt.run(bundle.sh("cat /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/all/rp_filter"))
    assert r.returncode == 0, r
    assert r.out.split() == ["1", "2"]
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == host


def test_sysctl_in_new_ipc_namespace(rt, bundle):
    host = Path("/proc/sys/kernel/shmmax").read_text()
    bundle.linux["sysctl"] = {"kernel.shmmax": "123456789"}
    r = rt.run(bundle.args("cat", "/proc/sys/kernel/shmmax"))
    assert r.returncode == 0, r
    assert r.out.strip() == "123456789"
    assert Path("/proc/sys/kernel/shmmax").read_text() == host


@pytest.mark.parametrize("key,drop", [("vm.swappiness", None), ("kernel.panic", None),
                                      ("net.ipv4.ip_forward", "network"), ("kernel.shmmax", "ipc")])
def test_sysctl_outside_a_namespace_is_refused(rt, bundle, key, drop):
    if drop:
        bundle.remove_namespace(drop)
    host = Path("/proc/sys/" + key.replace(".", "/")).read_text()
    bundle.linux["sysctl"] = {key: "1"}
    cid = rt.new_id()
    r = rt.create(cid, bundle.args("true"), check=False)
    assert r.returncode == 1
    assert key in r.err
    assert rt.status(cid) is None
    assert Path("/proc/sys/" + key.replace(".", "/")).read_text() == host


def test_mount_destination_is_created(rt, bundle, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    bundle.add_mount("/new/deep/dir", "bind", str(src), ["rbind"])
    r = rt.run(bundle.sh("grep -c ' /new/deep/dir ' /proc/self/mountinfo"))
    assert r.returncode == 0, r
    assert r.out.strip() == "1"


def test_bind_source_relative_to_the_bundle(rt, bundle):
    (bundle.path / "shared").mkdir()
    (bundle.path / "shared" / "f").write_text("relative source\n")
    bundle.add_mount("/shared", "bind", "shared", ["rbind", "ro"])
    r = rt.run(bundle.args("cat", "/shared/f"))
    assert r.returncode == 0, r
    assert r.out == "relative source\n"


def test_missing_masked_and_readonly_paths_are_ignored(rt, bundle):
    bundle.linux["maskedPaths"] = bundle.linux.get("maskedPaths", []) + ["/no/such/masked"]
    bundle.linux["readonlyPaths"] = bundle.linux.get("readonlyPaths", []) + ["/no/such/readonly"]
    r = rt.run(bundle.sh("echo ran; ls /no 2>/dev/null | wc -l"))
    assert r.returncode == 0, r
    assert r.out.split()[0] == "ran"


def test_mount_of_an_unknown_fstype_fails_create(rt, bundle):
    bundle.add_mount("/weird", "no-such-fs", "none", [])
    cid = rt.new_id()
    r = rt.create(cid, bundle.args("true"), check=False)
    assert r.returncode != 0
    assert "/weird" in r.err or "no-such-fs" in r.err
    assert rt.status(cid) is None


@pytest.mark.parametrize("type_", ["none", "", "bind"])
def test_bind_mount_by_option_whatever_the_type(rt, bundle, tmp_path, type_):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("typed\n")
    bundle.add_mount("/typed", type_, str(src), ["rbind", "rw"])
    if not type_:
        del bundle.config["mounts"][-1]["type"]
    r = rt.run(bundle.args("cat", "/typed/f"))
    assert r.returncode == 0, r
    assert r.out == "typed\n"


def test_bind_mount_noexec_nosuid_nodev(rt, bundle, tmp_path, util):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(bundle.rootfs / "bin" / "busybox", src / "busybox")
    bundle.add_mount("/opt", "bind", str(src), ["rbind", "noexec", "nosuid", "nodev"])
    r = rt.run(bundle.sh("/opt/busybox true; echo rc=$?; grep ' /opt ' /proc/self/mountinfo"))
    assert r.returncode == 0, r
    assert r.out.splitlines()[0] == "rc=126"
    m = util.parse_mountinfo(r.out.splitlines()[1])[0]
    assert {"noexec", "nosuid", "nodev"} <= m["opts"]
