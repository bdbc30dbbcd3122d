"""linux.resources and cgroupsPath: limits written to the container's cgroups and enforced,
where the cgroups are made, their removal on delete, and pause/resume with the freezer."""
from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import pytest


def _own_cgroups() -> dict[str, str]:
    out = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        for c in ctrls.split(",") if ctrls else ["unified"]:
            out[c] = path
    return out


def _cgroups_of(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        for c in ctrls.split(",") if ctrls else ["unified"]:
            out[c] = path
    return out


def _dirs_naming(token: str, util) -> list[str]:
    found = []
    for top in util.cgroup_mountpoints():
        for dirpath, _, _ in os.walk(top):
            if token in dirpath[len(top):]:
                found.append(dirpath)
    return found


@pytest.fixture
def cgroup_parent(rt, util, host_watch):
    """A parent cgroup name for cgroupsPath; removed (in every hierarchy) after the test's
    containers are deleted, since runc leaves the parents it made."""
    name = f"sampan-test-{secrets.token_hex(4)}"
    host_watch.watch_id(name)
    yield name
    rt.cleanup()
    for path in sorted(_dirs_naming(name, util), key=lambda p: -p.count("/")):
        try:
            os.rmdir(path)
        except OSError:
            pass


def test_memory_limit(rt, bundle, util):
    bundle.linux["resources"]["memory"] = {"limit": 64 << 20, "reservation": 32 << 20}
    cid, pid = rt.started(bundle.args("sleep", "100"))
    d = util.cgroup_dir(pid, "memory")
    assert cid in str(d)
    assert int((d / "memory.limit_in_bytes").read_text()) == 64 << 20
    assert int((d / "memory.soft_limit_in_bytes").read_text()) == 32 << 20


def test_memory_limit_is_enforced(rt, bundle):
    bundle.linux["resources"]["memory"] = {"limit": 16 << 20}
    # a 64 MiB tmpfs file is charged to the container's memory: it cannot fit in 16 MiB
    bundle.add_mount("/big", "tmpfs", "tmpfs", ["size=128m"])
    r = rt.run(bundle.sh("dd if=/dev/zero of=/big/f bs=1M count=64 2>/dev/null; echo dd-rc=$?"))
    assert "dd-rc=0" not in r.out, r


def test_pids_limit_is_enforced(rt, bundle, util):
    bundle.linux["resources"]["pids"] = {"limit": 10}
    r = rt.run(bundle.sh("cat /sys/fs/cgroup/pids/pids.max; i=0; while [ $i -lt 30 ]; do sleep 5 & i=$((i+1)); done; "
                         "echo spawned"))
    lines = r.out.split()
    assert lines[0] == "10"
    assert "fork" in r.err.lower() or "resource temporarily unavailable" in r.err.lower(), r


def test_pids_limit_in_the_cgroup(rt, bundle, util):
    bundle.linux["resources"]["pids"] = {"limit": 42}
    cid, pid = rt.started(bundle.args("sleep", "100"))
    assert (util.cgroup_dir(pid, "pids") / "pids.max").read_text().strip() == "42"


def test_cpu_shares_and_quota(rt, bundle, util):
    bundle.linux["resources"]["cpu"] = {"shares": 512, "quota": 50000, "period": 100000}
    cid, pid = rt.started(bundle.args("sleep", "100"))
    d = util.cgroup_dir(pid, "cpu")
    assert (d / "cpu.shares").read_text().strip() == "512"
    assert (d / "cpu.cfs_quota_us").read_text().strip() == "50000"
    assert (d / "cpu.cfs_period_us").read_text().strip() == "100000"


def test_cpuset(rt, bundle, util):
    bundle.linux["resources"]["cpu"] = {"cpus": "0", "mems": "0"}
    bundle.sh("grep Cpus_allowed_list /proc/self/status; sleep 100")
    cid = rt.new_id()
    created = rt.create(cid, bundle)
    rt.start(cid)
    pid = rt.state(cid)["pid"]
    d = util.cgroup_dir(pid, "cpuset")
    assert (d / "cpuset.cpus").read_text().strip() == "0"
    assert (d / "cpuset.mems").read_text().strip() == "0"
    util.wait_until(lambda: "Cpus_allowed_list" in created.out, what="the container's output")
    assert created.out.split()[-1] == "0"


@pytest.mark.parametrize("allowed", [False, True])
@pytest.mark.parametrize("device", [("/dev/loop-control", 10, 237), ("/dev/fuse", 10, 229)], ids=lambda d: d[0])
def test_devices_cgroup(rt, bundle, device, allowed):
    # Neither device is in runc's default allow list and the spec's first rule denies all.
    # Opening either needs no capability, so only the device rules decide.
    path, major, minor = device
    if not os.path.exists(path):
        pytest.skip(f"the host has no {path}")
    bundle.linux["devices"] = [{"path": path, "type": "c", "major": major, "minor": minor, "fileMode": 0o666,
                                "uid": 0, "gid": 0}]
    if allowed:
        bundle.linux["resources"]["devices"].append({"allow": True, "type": "c", "major": major, "minor": minor,
                                                     "access": "rw"})
    r = rt.run(bundle.sh(f"(: < {path}); echo rc=$?"))
    assert r.returncode == 0, r
    if allowed:
        assert r.out.strip() == "rc=0", r
    else:
        assert r.out.strip() == "rc=1", r
        assert "Operation not permitted" in r.err


def test_devices_cgroup_denies_mknod_use(rt, bundle):
    for kind in bundle.process["capabilities"].values():
        kind.append("CAP_MKNOD")
    r = rt.run(bundle.sh("mknod /tmp/mem c 1 1; echo mknod-rc=$?; head -c 1 /tmp/mem > /dev/null; echo open-rc=$?"))
    assert r.returncode == 0, r
    assert "open-rc=1" in r.out, r  # either the node cannot be made or it cannot be opened


def test_cgroups_path_absolute(rt, bundle, util, cgroup_parent):
    cid = rt.new_id()
    bundle.linux["cgroupsPath"] = f"/{cgroup_parent}/{cid}"
    rt.create(cid, bundle.args("sleep", "100"))
    pid = rt.state(cid)["pid"]
    cgroups = _cgroups_of(pid)
    for ctrl in ("memory", "pids", "cpu", "devices", "freezer"):
        assert cgroups[ctrl] == f"/{cgroup_parent}/{cid}", (ctrl, cgroups[ctrl])
    for ctrl in ("memory", "pids"):
        assert str(pid) in (util.cgroup_dir(pid, ctrl) / "cgroup.procs").read_text().split()
    rt.delete(cid, "--force")
    assert [d for d in _dirs_naming(cid, util)] == []


@pytest.mark.parametrize("forked_by", ["runtime", "intermediate"])
def test_the_init_and_an_exec_are_in_the_container_cgroup_of_every_hierarchy(rt, bundle, cgroup_parent, forked_by):
    """Each process enters its cgroups itself (v1 through tasks, cgroup2 by clone3 into the
    directory): the init forked by the runtime, or by an intermediate process when the
    container joins a namespace by path, and a process exec'd into it."""
    if forked_by == "intermediate":
        bundle.add_namespace("uts", "/proc/self/ns/uts")
    cid = rt.new_id()
    bundle.linux["cgroupsPath"] = f"/{cgroup_parent}/{cid}"
    rt.create(cid, bundle.args("sleep", "100"))
    rt.start(cid)
    lines = rt.exec(cid, "cat", "/proc/self/cgroup").ok().out.splitlines()
    lines += Path(f"/proc/{rt.state(cid)['pid']}/cgroup").read_text().splitlines()
    assert len(lines) == 2 * len(Path("/proc/self/cgroup").read_text().splitlines()), lines
    for line in lines:
        assert line.split(":", 2)[2] == f"/{cgroup_parent}/{cid}", line
    rt.delete(cid, "--force")


def test_cgroups_path_relative(rt, bundle, util, cgroup_parent):
    cid = rt.new_id()
    bundle.linux["cgroupsPath"] = f"{cgroup_parent}/{cid}"
    rt.create(cid, bundle.args("sleep", "100"))
    pid = rt.state(cid)["pid"]
    own, theirs = _own_cgroups(), _cgroups_of(pid)
    for ctrl in ("memory", "pids", "cpu"):
        assert theirs[ctrl] == os.path.join(own[ctrl], cgroup_parent, cid), (ctrl, theirs[ctrl])


def test_default_cgroup_is_named_after_the_id_and_removed_on_delete(rt, bundle, util):
    cid, pid = rt.started(bundle.args("sleep", "100"))
    own, theirs = _own_cgroups(), _cgroups_of(pid)
    for ctrl in ("memory", "pids", "cpu", "devices", "freezer"):
        assert theirs[ctrl] == os.path.join(own[ctrl], cid), (ctrl, theirs[ctrl])
    made = _dirs_naming(cid, util)
    assert len(made) >= 5
    rt.kill(cid, "KILL")
    rt.wait_status(cid, "stopped")
    assert _dirs_naming(cid, util) == made  # kept until delete
    rt.delete(cid)
    assert _dirs_naming(cid, util) == []


def _v1_mounted(controller: str) -> bool:
    return Path("/sys/fs/cgroup", controller).is_dir() and not Path("/sys/fs/cgroup/cgroup.controllers").exists()


def _unified_controllers() -> set[str]:
    for top in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        if Path(top, "cgroup.controllers").exists():
            return set(Path(top, "cgroup.controllers").read_text().split())
    return set()


@pytest.mark.parametrize("resources, controller", [
    ({"network": {"classID": 1048577}}, "net_cls"),
    ({"network": {"priorities": [{"name": "eth0", "priority": 5}]}}, "net_prio"),
    ({"rdma": {"mlx5_1": {"hcaHandles": 3}}}, "rdma"),
])
def test_a_limit_of_a_controller_the_host_lacks_fails_create(rt, bundle, util, resources, controller):
    """Never dropped silently: the create fails with one line naming the controller and leaves
    no cgroup, state or process behind."""
    if _v1_mounted(controller) or controller in _unified_controllers():
        pytest.skip(f"this host has the {controller} controller")
    bundle.linux["resources"].update(resources)
    cid = rt.new_id()
    r = rt.create(cid, bundle.args("sleep", "100"), check=False)
    assert r.returncode == 1, r
    assert controller in r.err and len(r.err.strip().splitlines()) == 1, r.err
    assert rt.status(cid) is None
    assert not (rt.root / cid).exists()
    assert _dirs_naming(cid, util) == []
    assert not [pid for pid in os.listdir("/proc") if pid.isdigit() and cid in _cgroup_text(pid)]


def _cgroup_text(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return ""


def test_hugetlb_limit_is_applied_where_the_host_has_the_controller(rt, bundle, util):
    """On a hybrid host without a v1 hugetlb hierarchy the limit goes to the unified tree
    (runc 1.1 refuses it there); a page size the host lacks fails create with one line."""
    if not _v1_mounted("hugetlb") and "hugetlb" not in _unified_controllers():
        pytest.skip("no hugetlb controller on this host")
    bundle.linux["resources"]["hugepageLimits"] = [{"pageSize": "2MB", "limit": 4 << 20}]
    cid, pid = rt.started(bundle.args("sleep", "100"))
    d = util.cgroup_dir(pid, "hugetlb" if _v1_mounted("hugetlb") else "unified")
    name = "hugetlb.2MB.limit_in_bytes" if _v1_mounted("hugetlb") else "hugetlb.2MB.max"
    assert int((d / name).read_text()) == 4 << 20
    bundle.linux["resources"]["hugepageLimits"] = [{"pageSize": "4MB", "limit": 4 << 20}]
    other = rt.new_id()
    r = rt.create(other, bundle, check=False)
    assert r.returncode == 1 and "hugetlb" in r.err and len(r.err.strip().splitlines()) == 1, r.err
    assert rt.status(other) is None and _dirs_naming(other, util) == []


def test_pause_and_resume(rt, bundle, util):
    bundle.sh("i=0; while :; do i=$((i+1)); echo $i > /count; sleep 0.02; done")
    cid, pid = rt.started(bundle)
    count = bundle.rootfs / "count"

    def read() -> int:
        try:
            return int(count.read_text() or 0)
        except (ValueError, FileNotFoundError):
            return 0

    util.wait_until(lambda: read() > 2, what="the counter to run")
    rt("pause", cid).ok()
    assert rt.status(cid) == "paused"
    assert (util.cgroup_dir(pid, "freezer") / "freezer.state").read_text().strip() == "FROZEN"
    frozen_at = read()
    time.sleep(0.3)
    assert read() == frozen_at, "the container kept running while paused"
    r = rt("pause", cid)
    assert r.returncode != 0
    rt("resume", cid).ok()
    assert rt.status(cid) == "running"
    util.wait_until(lambda: read() > frozen_at + 2, what="the counter to run again after resume")
    r = rt("resume", cid)
    assert r.returncode != 0 and "not paused" in r.err


def test_delete_force_of_a_paused_container(rt, bundle, util):
    cid, pid = rt.started(bundle.args("sleep", "100"))
    rt("pause", cid).ok()
    rt.delete(cid, "--force")
    assert rt.status(cid) is None
    assert _dirs_naming(cid, util) == []


def test_pause_and_resume_of_a_created_container(rt, bundle):
    # runc freezes a created container too; resume brings it back to created
    cid = rt.new_id()
    rt.create(cid, bundle.args("sleep", "100"))
    rt("pause", cid).ok()
    assert rt.status(cid) == "paused"
    rt("resume", cid).ok()
    assert rt.status(cid) == "created"
    rt.start(cid)
    assert rt.status(cid) == "running"


def test_update_changes_the_limits_of_a_running_container(rt, bundle, util):
    bundle.linux["resources"]["memory"] = {"limit": 64 << 20}
    bundle.linux["resources"]["pids"] = {"limit": 100}
    cid, pid = rt.started(bundle.args("sleep", "100"))
    rt("update", "--memory", "96m", "--pids-limit", "50", "--cpu-share", "256", cid).ok()
    assert int((util.cgroup_dir(pid, "memory") / "memory.limit_in_bytes").read_text()) == 96 << 20
    assert (util.cgroup_dir(pid, "pids") / "pids.max").read_text().strip() == "50"
    assert (util.cgroup_dir(pid, "cpu") / "cpu.shares").read_text().strip() == "256"


def test_update_from_a_resources_file(rt, bundle, util, tmp_path):
    cid, pid = rt.started(bundle.args("sleep", "100"))
    (tmp_path / "r.json").write_text('{"memory": {"limit": 50331648}, "cpu": {"quota": 20000, "period": 100000}}')
    rt("update", "--resources", str(tmp_path / "r.json"), cid).ok()
    assert int((util.cgroup_dir(pid, "memory") / "memory.limit_in_bytes").read_text()) == 48 << 20
    assert (util.cgroup_dir(pid, "cpu") / "cpu.cfs_quota_us").read_text().strip() == "20000"
