"""The v1 side on this host's real hierarchies (through the hybrid manager when the host is
hybrid): limits, processes, pids limit, freezer, OOM, device rules, cleanup."""
from __future__ import annotations

import json
import os
import signal
import time

import pytest

from sampan.runtime.cgroups import fs, manager_for, manager_from_state
from sampan.runtime.cgroups.devices import DEFAULT_DEVICE_RULES
from sampan.runtime.cgroups.hierarchy import v1_mounts

from cgroup_testlib import needs_root, needs_v1, proc_state, wait_until

pytestmark = [needs_root, needs_v1]

MiB = 1 << 20


def read(m, key: str, name: str) -> str:
    with open(os.path.join(m.paths()[key], name)) as f:
        return f.read().strip()


def test_create_set_join_and_destroy(name, spawn, cleanup):
    m = manager_for(f"/{name}", name)
    cleanup(m)
    m.create()
    m.create()  # idempotent
    m.set(
        {
            "memory": {"limit": 64 * MiB, "swap": 128 * MiB, "reservation": 32 * MiB, "swappiness": 10},
            "pids": {"limit": 50},
            "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
        }
    )
    assert read(m, "memory", "memory.limit_in_bytes") == str(64 * MiB)
    assert read(m, "memory", "memory.memsw.limit_in_bytes") == str(128 * MiB)
    assert read(m, "memory", "memory.soft_limit_in_bytes") == str(32 * MiB)
    assert read(m, "memory", "memory.swappiness") == "10"
    assert read(m, "pids", "pids.max") == "50"
    assert read(m, "cpu", "cpu.shares") == "512"
    assert read(m, "cpu", "cpu.cfs_quota_us") == "50000"
    assert read(m, "cpu", "cpu.cfs_period_us") == "100000"
    assert read(m, "cpuset", "cpuset.cpus") == "0"

    child = spawn("exec sleep 60", cgroup=m)
    assert m.pids() == [child.pid]
    with open(f"/proc/{child.pid}/cgroup") as f:
        lines = f.read().splitlines()
    assert all(line.endswith(f"/{name}") for line in lines), lines

    stats = m.stats()
    assert stats["memory"]["limit"] == 64 * MiB
    assert stats["pids"] == {"current": 1, "limit": 50}
    assert stats["cpu"]["usage_ns"] >= 0 and len(stats["cpu"]["percpu_ns"]) == os.cpu_count()
    assert stats["oom_kill"] == 0 and not m.oom_killed()

    m.kill_all(signal.SIGKILL)
    child.finish()
    m.destroy()
    for d in m.paths().values():
        assert not os.path.exists(d), d


def test_memory_limits_change_in_both_directions(name, cleanup):
    m = manager_for(f"/{name}", name)
    cleanup(m)
    m.create()
    for limit, swap in ((64, 128), (32, 48), (256, 512), (16, 16)):
        m.set({"memory": {"limit": limit * MiB, "swap": swap * MiB}})
        assert read(m, "memory", "memory.limit_in_bytes") == str(limit * MiB)
        assert read(m, "memory", "memory.memsw.limit_in_bytes") == str(swap * MiB)
    m.set({"memory": {"limit": -1}})
    assert int(read(m, "memory", "memory.limit_in_bytes")) > 1 << 62
    assert int(read(m, "memory", "memory.memsw.limit_in_bytes")) > 1 << 62


def test_cpu_period_can_shrink_under_a_quota(name, cleanup):
    m = manager_for(f"/{name}", name)
    cleanup(m)
    m.create()
    m.set({"cpu": {"quota": 200000, "period": 400000}})
    m.set({"cpu": {"quota": 5000, "period": 10000}})
    assert (read(m, "cpu", "cpu.cfs_quota_us"), read(m, "cpu", "cpu.cfs_period_us")) == ("5000", "10000")
    m.set({"cpu": {"quota": -1}})
    assert read(m, "cpu", "cpu.cfs_quota_us") == "-1"


def test_pids_limit_stops_forks(name, spawn, cleanup):
    m = manager_for(f"/{name}", name)
    cleanup(m)
    m.create()
    m.set({"pids": {"limit": 5}})
    # The sleeps let go of the pipes, so the shell's exit is seen while they still run.
    child = spawn("i=0; while [ $i -lt 20 ]; do sleep 30 </dev/null >/dev/null 2>&1 & i=$((i+1)); done; wait", cgroup=m)
    child.go()
    code, _out, err = child.finish()
    assert code != 0 and "fork" in err.lower(), err
    assert 1 <= len(m.pids()) <= 5
    with open(os.path.join(m.paths()["pids"], "pids.events")) as f:
        assert int(f.read().split()[1]) > 0  # "max N": forks refused
    m.kill_all(signal.SIGKILL)
    child.finish()
    assert wait_until(lambda: m.pids() == [])


def test_freeze_and_thaw_a_real_process(name, spawn, cleanup, tmp_path):
    m = manager_for(f"/{name}", name)
    cleanup(m)
    m.create()
    out = tmp_path / "ticks"
    child = spawn(f"while :; do echo x >> {out}; sleep 0.01; done", cgroup=m)
    child.go()
    assert wait_until(lambda: out.exists() and out.stat().st_size > 0)

    m.freeze()
    assert m.state() == "frozen"
    assert read(m, "freezer", "freezer.state") == "FROZEN"
    assert proc_state(child.pid) in ("D", "S")
    size = out.stat().st_size
    time.sleep(0.2)
    assert out.stat().st_size == size, "a frozen process kept writing"

    m.thaw()
    assert m.state() == "thawed"
    assert wait_until(lambda: out.stat().st_size > size)


def test_kill_all_keeps_a_paused_container_paused_for_other_signals(name, spawn, cleanup):
    m = manager_for(f"/{name}", name)
    cleanup(m)
    m.create()
    child = spawn("trap 'echo got-usr1' USR1; while :; do sleep 0.05; done", cgroup=m)
    child.go()
    m.freeze()
    m.kill_all(signal.SIGUSR1)
    assert m.state() == "frozen"
    m.kill_all(signal.SIGKILL)  # must thaw for the kill to land
    assert m.state() == "thawed"
    assert child.proc.wait(timeout=5) == -signal.SIGKILL


def test_oom_kill_is_reported(name, spawn, cleanup):
    m = manager_for(f"/{name}", name)
    cleanup(m)
    m.create()
    m.set({"memory": {"limit": 32 * MiB, "swap": 32 * MiB}})
    child = spawn("b = b'x' * (256 << 20)", python=True, cgroup=m)
    child.go()
    assert child.proc.wait(timeout=20) == -signal.SIGKILL
    assert m.oom_killed()
    assert m.stats()["oom_kill"] >= 1


@pytest.mark.skipif("devices" not in v1_mounts(), reason="no v1 devices controller")
def test_device_rules(name, spawn, cleanup):
    m = manager_for(f"/{name}", name)
    cleanup(m)
    m.create()
    m.set({"devices": [{"allow": False, "access": "rwm"}, *DEFAULT_DEVICE_RULES]})
    listed = read(m, "devices", "devices.list").splitlines()
    assert "c 1:3 rwm" in listed and "c 136:* rwm" in listed and len(listed) == len(DEFAULT_DEVICE_RULES)

    probe = "import os, sys\nfor p in ('/dev/null', '/dev/kmsg'):\n    try:\n        os.close(os.open(p, os.O_RDONLY)); print(p, 'ok')\n    except OSError as e:\n        print(p, e.errno)\n"
    child = spawn(probe, python=True, cgroup=m)
    child.go()
    code, out, err = child.finish()
    assert code == 0, err
    assert out.split("\n")[:2] == ["/dev/null ok", "/dev/kmsg 1"]  # EPERM

    # An update that adds a device grants it without a deny-all step in between.
    m.set({"devices": [{"allow": False, "access": "rwm"}, *DEFAULT_DEVICE_RULES, {"allow": True, "type": "c", "major": 1, "minor": 11, "access": "r"}]})
    assert "c 1:11 r" in read(m, "devices", "devices.list").splitlines()


def test_network_is_refused_when_not_mounted_and_unified_is_refused(name, cleanup):
    m = manager_for(f"/{name}", name)
    cleanup(m)
    m.create()
    if "net_cls" not in m.paths():
        with pytest.raises(ValueError, match="the net_cls controller is not mounted on this host"):
            m.set({"network": {"classID": 5}})
    if "net_prio" not in m.paths():
        with pytest.raises(ValueError, match="the net_prio controller is not mounted on this host"):
            m.set({"network": {"priorities": [{"name": "eth0", "priority": 1}]}})
    with pytest.raises(ValueError, match="unified resources require cgroup v2"):
        m.set({"unified": {"memory.high": "1"}})


def test_a_file_the_mounted_controller_lacks_is_refused_by_name(name, cleanup):
    """blkio without a weight-based I/O scheduler has no blkio.weight (this host); the limit
    fails with one line naming the file, never dropped."""
    m = manager_for(f"/{name}", name)
    cleanup(m)
    m.create()
    if "blkio" not in m.paths() or os.path.exists(os.path.join(m.paths()["blkio"], "blkio.weight")):
        pytest.skip("needs a blkio hierarchy without blkio.weight")
    with pytest.raises(FileNotFoundError, match="cannot set blkio.weight=500: the blkio controller has no "
                                                "blkio.weight here"):
        m.set({"blockIO": {"weight": 500}})


def test_write_errors_name_file_and_value(name, cleanup):
    m = manager_for(f"/{name}", name)
    cleanup(m)
    m.create()
    with pytest.raises(OSError, match="cgroup: write cpuset.cpus=99: "):
        m.set({"cpu": {"cpus": "99"}})
    with pytest.raises(OSError, match="cgroup: write memory.limit_in_bytes=abc: Invalid argument"):
        fs.write(m.paths()["memory"], "memory.limit_in_bytes", "abc")


def test_unavailable_controller_is_an_error_not_silence(name, cleanup):
    m = manager_for(f"/{name}", name)
    cleanup(m)
    m.create()
    if "rdma" in m.paths():
        pytest.skip("host has the rdma controller")
    with pytest.raises((ValueError, OSError), match="rdma"):
        m.set({"rdma": {"mlx5_0": {"hcaHandles": 2}}})


def test_nested_path_removes_the_parents_it_made(name, cleanup):
    m = manager_for(f"/{name}/a/b", name)
    cleanup(m)
    m.create()
    assert all(os.path.isdir(d) for d in m.paths().values())
    state = json.loads(json.dumps(m.to_state()))
    assert sorted(state["created"]) == sorted({os.path.dirname(d) for d in m.paths().values()} | {os.path.dirname(os.path.dirname(d)) for d in m.paths().values()})
    rebuilt = manager_from_state(state)
    assert rebuilt.paths() == m.paths() and rebuilt.mode == m.mode
    rebuilt.destroy()
    for d in m.paths().values():
        assert not os.path.exists(os.path.dirname(os.path.dirname(d)))


def test_destroy_is_robust_on_partial_state(name):
    m = manager_for(f"/{name}", name)
    m.destroy()  # never created
    os.mkdir(m.paths()["memory"])
    os.mkdir(os.path.join(m.paths()["memory"], "child"))
    m.destroy()
    assert not os.path.exists(m.paths()["memory"])
    m.destroy()  # twice


def test_failed_set_then_destroy_leaves_nothing(name):
    m = manager_for(f"/{name}", name)
    m.create()
    try:
        with pytest.raises(ValueError):
            m.set({"pids": {"limit": "lots"}})
    finally:
        m.destroy()
    assert not any(os.path.exists(d) for d in m.paths().values())
