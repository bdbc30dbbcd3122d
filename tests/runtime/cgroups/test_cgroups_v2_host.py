"""The v2 manager on this host's real cgroup2 mount (/sys/fs/cgroup/unified on a hybrid host):
processes, cgroup.freeze, cgroup.kill, the eBPF device filter, write errors, cleanup."""
from __future__ import annotations

import json
import os
import signal
import time

import pytest

from cgroup_testlib import UNIFIED_MOUNT, needs_cgroup2, needs_root, proc_state, wait_until
from sampan.linux import bpf
from sampan.runtime.cgroups import manager_for, manager_from_state
from sampan.runtime.cgroups.devices import DEFAULT_DEVICE_RULES

pytestmark = [needs_root, needs_cgroup2]

DENY_ALL = {"allow": False, "access": "rwm"}
PROBE = """import os
for spec in __import__('sys').argv[1:] or ['/dev/null:r', '/dev/kmsg:r', '/dev/null:w']:
    path, mode = spec.split(':')
    try:
        os.close(os.open(path, os.O_RDONLY if mode == 'r' else os.O_WRONLY))
        print(spec, 'ok')
    except OSError as e:
        print(spec, e.errno)
"""


def v2_manager(name: str, path: str | None = None):
    m = manager_for(path or f"/{name}", name, root=UNIFIED_MOUNT)
    assert m.mode == "v2"
    return m


def probe(m, spawn) -> dict[str, str]:
    child = spawn(PROBE, python=True, cgroup=m)
    child.go()
    code, out, err = child.finish()
    assert code == 0, err
    return dict(line.split() for line in out.splitlines())


def attached_programs(m) -> list[int]:
    fd = os.open(m.paths()[""], os.O_RDONLY | os.O_DIRECTORY)
    try:
        return bpf.prog_query(fd, bpf.ATTACH_CGROUP_DEVICE)
    finally:
        os.close(fd)


def test_create_join_pids_destroy(name, spawn, cleanup):
    m = v2_manager(name, f"/{name}/inner")
    cleanup(m)
    m.create()
    m.create()
    d = m.paths()[""]
    assert os.path.isdir(d) and m.to_state()["created"] == [os.path.dirname(d)]
    children = [spawn("exec sleep 60", cgroup=m) for _ in range(2)]
    assert sorted(m.pids()) == sorted(c.pid for c in children)
    assert m.stats()["cpu"]["usage_ns"] >= 0
    m.kill_all(signal.SIGKILL)
    for child in children:
        assert child.proc.wait(timeout=5) == -signal.SIGKILL
    rebuilt = manager_from_state(json.loads(json.dumps(m.to_state())))
    assert rebuilt.paths() == m.paths()
    rebuilt.destroy()
    assert not os.path.exists(os.path.dirname(d))


def test_freeze_and_thaw(name, spawn, cleanup, tmp_path):
    m = v2_manager(name)
    cleanup(m)
    m.create()
    out = tmp_path / "ticks"
    child = spawn(f"while :; do echo x >> {out}; sleep 0.01; done", cgroup=m)
    child.go()
    assert wait_until(lambda: out.exists() and out.stat().st_size > 0)
    m.freeze()
    assert m.state() == "frozen"
    with open(os.path.join(m.paths()[""], "cgroup.events")) as f:
        assert "frozen 1" in f.read()
    assert proc_state(child.pid) in ("S", "D")
    size = out.stat().st_size
    time.sleep(0.2)
    assert out.stat().st_size == size, "a frozen process kept writing"
    m.thaw()
    assert m.state() == "thawed"
    assert wait_until(lambda: out.stat().st_size > size)


def test_kill_all_with_a_catchable_signal_freezes_around_the_sweep(name, spawn, cleanup):
    m = v2_manager(name)
    cleanup(m)
    m.create()
    child = spawn("trap 'exit 7' TERM; while :; do sleep 0.05; done", cgroup=m)
    child.go()
    time.sleep(0.1)
    m.kill_all(signal.SIGTERM)
    assert child.proc.wait(timeout=5) == 7
    assert m.state() == "thawed"


def test_device_filter_allows_listed_devices_only(name, spawn, cleanup):
    m = v2_manager(name)
    cleanup(m)
    m.create()
    m.set({"devices": [DENY_ALL, *DEFAULT_DEVICE_RULES]})
    assert len(attached_programs(m)) == 1
    assert probe(m, spawn) == {"/dev/null:r": "ok", "/dev/kmsg:r": "1", "/dev/null:w": "ok"}

    # An update replaces the program rather than stacking another one.
    m.set({"devices": [DENY_ALL, *DEFAULT_DEVICE_RULES, {"allow": True, "type": "c", "major": 1, "minor": 11, "access": "r"}]})
    assert len(attached_programs(m)) == 1
    assert probe(m, spawn)["/dev/kmsg:r"] == "ok"


def test_device_filter_default_allow_with_partial_deny(name, spawn, cleanup):
    m = v2_manager(name)
    cleanup(m)
    m.create()
    m.set({"devices": [{"allow": True}, {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "w"}]})
    assert probe(m, spawn) == {"/dev/null:r": "ok", "/dev/kmsg:r": "ok", "/dev/null:w": "1"}


def test_unified_writes_and_their_errors(name, cleanup):
    m = v2_manager(name)
    cleanup(m)
    m.create()
    m.set({"unified": {"cgroup.max.depth": "3"}})
    with open(os.path.join(m.paths()[""], "cgroup.max.depth")) as f:
        assert f.read().strip() == "3"
    with pytest.raises(OSError, match="cgroup: write cgroup.max.depth=abc: Invalid argument"):
        m.set({"unified": {"cgroup.max.depth": "abc"}})


def test_missing_controller_is_named(name, cleanup):
    m = v2_manager(name)
    cleanup(m)
    m.create()
    if "memory" in m.controllers():
        pytest.skip("memory controller available here")
    with pytest.raises(OSError, match="cgroup: write memory.max=1048576: the memory controller is not enabled"):
        m.set({"memory": {"limit": 1 << 20}})


def test_destroy_of_partial_and_missing_cgroups(name):
    m = v2_manager(name, f"/{name}/a")
    m.destroy()
    os.makedirs(os.path.join(m.paths()[""], "nested"))
    m.destroy()
    assert os.path.isdir(os.path.dirname(m.paths()[""]))  # not ours: create() never made it
    os.rmdir(os.path.dirname(m.paths()[""]))
