"""The v2 manager against a temporary directory laid out like a cgroup2 filesystem, for the
controller files this host's cgroup2 mount lacks (memory, cpu, io, pids)."""
from __future__ import annotations

import os

import pytest

from sampan.runtime.cgroups import fs, manager_for

CONTROLLERS = "cpuset cpu io memory hugetlb pids rdma"
CONTAINER_FILES = {
    "cgroup.controllers": "cpuset cpu io memory pids",
    "cgroup.procs": "",
    "memory.max": "max",
    "memory.swap.max": "max",
    "memory.low": "0",
    "memory.high": "max",
    "memory.current": "4096",
    "cpu.weight": "100",
    "cpu.max": "max 100000",
    "cpu.max.burst": "0",
    "cpuset.cpus": "",
    "cpuset.mems": "",
    "io.weight": "default 100",
    "io.max": "",
    "pids.max": "max",
}


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "cgroup.controllers").write_text(CONTROLLERS + "\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    return tmp_path


@pytest.fixture
def writes(monkeypatch):
    """Every fs.write as (dir, file, value), still carried out."""
    seen: list[tuple[str, str, str]] = []
    real = fs.write

    def record(dirpath: str, name: str, value: str) -> None:
        seen.append((dirpath, name, value))
        real(dirpath, name, value)

    monkeypatch.setattr(fs, "write", record)
    return seen


def container(tree, name="ctr"):
    m = manager_for(f"/{name}", name, root=str(tree))
    assert m.mode == "v2"
    m.create()
    d = m.paths()[""]
    for file, content in CONTAINER_FILES.items():
        with open(os.path.join(d, file), "w") as f:
            f.write(content)
    return m, d


def content(d: str, name: str) -> str:
    with open(os.path.join(d, name)) as f:
        return f.read()


def test_create_offers_every_controller_to_the_container(tree, writes):
    m = manager_for("/a/ctr", "x", root=str(tree))
    m.create()
    assert os.path.isdir(tree / "a" / "ctr")
    offered = [(d, v) for d, n, v in writes if n == "cgroup.subtree_control"]
    assert offered == [(str(tree), "+" + c) for c in sorted(CONTROLLERS.split())]
    assert m.to_state()["created"] == [str(tree / "a")]


def test_resource_writes(tree, writes):
    m, d = container(tree)
    writes.clear()
    m.set(
        {
            "memory": {"limit": 1 << 30, "swap": 3 << 29, "reservation": 1 << 28},
            "cpu": {"shares": 2048, "quota": 150000, "period": 100000, "cpus": "0-1", "mems": "0"},
            "blockIO": {
                "weight": 1000,
                "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1 << 20}],
                "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 100}],
            },
            "pids": {"limit": 64},
        }
    )
    assert content(d, "memory.max") == str(1 << 30)
    assert content(d, "memory.swap.max") == str(1 << 29)
    assert content(d, "memory.low") == str(1 << 28)
    assert content(d, "cpu.weight") == "79"
    assert content(d, "cpu.max") == "150000 100000"
    assert content(d, "cpuset.cpus") == "0-1"
    assert content(d, "io.weight") == "10000"
    assert content(d, "pids.max") == "64"
    io_max = [v for _d, n, v in writes if n == "io.max"]
    assert io_max == ["8:0 rbps=1048576", "8:0 wiops=100"]
    assert {dd for dd, _n, _v in writes} == {d}


def test_updates_keep_what_they_do_not_name(tree):
    m, d = container(tree)
    m.set({"cpu": {"quota": 20000, "period": 50000}})
    m.set({"cpu": {"period": 100000}})
    assert content(d, "cpu.max") == "20000 100000"
    m.set({"cpu": {"quota": -1}})
    assert content(d, "cpu.max") == "max 100000"
    m.set({"memory": {"limit": -1}})
    assert (content(d, "memory.max"), content(d, "memory.swap.max")) == ("max", "max")
    m.set({"pids": {"limit": 0}})
    assert content(d, "pids.max") == "max"


def test_unified_entries_are_written_last_and_verbatim(tree, writes):
    m, d = container(tree)
    writes.clear()
    m.set({"memory": {"limit": 1000}, "unified": {"memory.max": "2000", "memory.high": "1500"}})
    assert [(n, v) for _d, n, v in writes] == [("memory.max", "1000"), ("memory.max", "2000"), ("memory.high", "1500")]
    assert content(d, "memory.max") == "2000"


def test_missing_controller_file_is_reported_with_the_controller(tree):
    m, _d = container(tree)
    with pytest.raises(OSError, match=r"cgroup: write hugetlb.2MB.max=2097152: the hugetlb controller is not enabled"):
        m.set({"hugepageLimits": [{"pageSize": "2MB", "limit": 2 << 20}]})


def test_swap_without_swap_accounting(tree):
    m, d = container(tree)
    os.unlink(os.path.join(d, "memory.swap.max"))
    m.set({"memory": {"limit": 1 << 20, "swap": 1 << 20}})  # "no swap" needs no file
    assert content(d, "memory.max") == str(1 << 20)
    with pytest.raises(OSError, match="memory.swap.max=1048576"):
        m.set({"memory": {"limit": 1 << 20, "swap": 2 << 20}})


def test_invalid_input_writes_nothing(tree, writes):
    m, _d = container(tree)
    writes.clear()
    with pytest.raises(ValueError):
        m.set({"pids": {"limit": 10}, "unified": {"../escape": "1"}})
    with pytest.raises(ValueError):
        m.set({"pids": {"limit": 10}, "devices": [{"type": "c"}]})
    assert writes == []


def test_stats_and_oom_from_files(tree):
    m, d = container(tree)
    files = {
        "memory.stat": "anon 100\nfile 200\n",
        "memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        "memory.peak": "8192",
        "cpu.stat": "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 4\nnr_throttled 1\nthrottled_usec 20\n",
        "pids.current": "3",
    }
    for file, text in files.items():
        with open(os.path.join(d, file), "w") as f:
            f.write(text)
    stats = m.stats()
    assert stats["memory"] == {"usage": 4096, "max_usage": 8192, "limit": None, "stat": {"anon": 100, "file": 200}}
    assert stats["cpu"] == {
        "usage_ns": 1_500_000,
        "user_ns": 1_000_000,
        "system_ns": 500_000,
        "periods": 4,
        "throttled_periods": 1,
        "throttled_ns": 20_000,
    }
    assert stats["pids"] == {"current": 3, "limit": None}
    assert stats["oom_kill"] == 1 and m.oom_killed()
