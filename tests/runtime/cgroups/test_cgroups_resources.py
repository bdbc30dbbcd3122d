"""OCI resources -> cgroup file plans, v1 and v2, as pure functions over fake current values."""
from __future__ import annotations

import pytest

from sampan.runtime.cgroups import v1_resources, v2_resources
from sampan.runtime.cgroups.v2_resources import cpu_max, cpu_weight, io_weight, swap_max


class FakeFiles:
    """Stands in for fs.Files: current values of a cgroup's files."""

    def __init__(self, **values: str) -> None:
        self.values = {k.replace("__", "."): v for k, v in values.items()}

    def read(self, name: str) -> str:
        return self.values[name]

    def exists(self, name: str) -> bool:
        return name in self.values


# -- v2 conversions ---------------------------------------------------------------------------
@pytest.mark.parametrize(("shares", "weight"), [(2, 1), (1024, 39), (262144, 10000), (512, 20), (1, 1), (10**6, 10000)])
def test_cpu_weight_from_shares(shares, weight):
    assert cpu_weight(shares) == weight


@pytest.mark.parametrize(("blkio", "io"), [(10, 1), (1000, 10000), (500, 4950), (100, 910)])
def test_io_weight_from_blkio_weight(blkio, io):
    assert io_weight(blkio) == io


@pytest.mark.parametrize("bad", [9, 1001, 0])
def test_io_weight_range(bad):
    with pytest.raises(ValueError, match="10..1000"):
        io_weight(bad)


@pytest.mark.parametrize(
    ("quota", "period", "current", "expected"),
    [
        (50000, 100000, "max 100000", "50000 100000"),
        (-1, 100000, "20000 100000", "max 100000"),
        (None, 50000, "max 100000", "max 50000"),
        (None, 50000, "30000 100000", "30000 50000"),
        (25000, None, "max 200000", "25000 200000"),
        (None, None, "max 100000", None),
    ],
)
def test_cpu_max(quota, period, current, expected):
    assert cpu_max(quota, period, current) == expected


@pytest.mark.parametrize(
    ("swap", "limit", "expected"),
    [
        (None, None, None),
        (None, -1, "max"),
        (-1, 100, "max"),
        (300, 100, "200"),
        (100, 100, "0"),
        (None, 100, None),
    ],
)
def test_swap_max(swap, limit, expected):
    assert swap_max(swap, limit) == expected


@pytest.mark.parametrize(("swap", "limit", "message"), [(50, 100, ">= memory.limit"), (300, None, "needs a memory.limit"), (300, -1, "needs")])
def test_swap_max_rejects(swap, limit, message):
    with pytest.raises(ValueError, match=message):
        swap_max(swap, limit)


# -- v2 plans ---------------------------------------------------------------------------------
V2_FILES = FakeFiles(memory__swap__max="max", memory__current="1000", cpu__max="max 100000")


def test_v2_memory_plan():
    plan = v2_resources.memory({"limit": 1 << 30, "swap": 3 << 29, "reservation": 1 << 29}, V2_FILES)
    assert plan == [("memory.swap.max", str(1 << 29)), ("memory.max", str(1 << 30)), ("memory.low", str(1 << 29))]
    assert v2_resources.memory({"limit": -1}, V2_FILES) == [("memory.swap.max", "max"), ("memory.max", "max")]
    assert v2_resources.memory({"kernel": 1 << 20, "kernelTCP": 1 << 20}, V2_FILES) == []


def test_v2_memory_without_swap_accounting_skips_only_no_op_swap():
    no_swap = FakeFiles(memory__current="0")
    assert v2_resources.memory({"limit": 100, "swap": 100}, no_swap) == [("memory.max", "100")]
    assert v2_resources.memory({"limit": 100, "swap": 300}, no_swap) == [("memory.swap.max", "200"), ("memory.max", "100")]


def test_v2_memory_rejects_v1_only_knobs_and_usage_check():
    with pytest.raises(ValueError, match="swappiness"):
        v2_resources.memory({"swappiness": 10}, V2_FILES)
    with pytest.raises(ValueError, match="disableOOMKiller"):
        v2_resources.memory({"disableOOMKiller": True}, V2_FILES)
    assert v2_resources.memory({"swappiness": -1, "disableOOMKiller": False}, V2_FILES) == []
    with pytest.raises(ValueError, match="below the current usage 1000"):
        v2_resources.memory({"limit": 500, "checkBeforeUpdate": True}, V2_FILES)


def test_v2_cpu_plan():
    plan = v2_resources.cpu(
        {"shares": 1024, "quota": 50000, "period": 100000, "burst": 1000, "idle": 0, "cpus": "0-1", "mems": "0"}, V2_FILES
    )
    assert plan == [
        ("cpu.weight", "39"),
        ("cpu.max", "50000 100000"),
        ("cpu.max.burst", "1000"),
        ("cpu.idle", "0"),
        ("cpuset.cpus", "0-1"),
        ("cpuset.mems", "0"),
    ]
    with pytest.raises(ValueError, match="realtime"):
        v2_resources.cpu({"realtimeRuntime": 1000}, V2_FILES)


def test_v2_io_plan():
    bio = {
        "weight": 500,
        "leafWeight": 300,
        "weightDevice": [{"major": 8, "minor": 0, "weight": 100}],
        "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
        "throttleWriteBpsDevice": [{"major": 8, "minor": 16, "rate": 0}],
        "throttleReadIOPSDevice": [{"major": 8, "minor": 0, "rate": 100}],
        "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 200}],
    }
    assert v2_resources.io(bio, FakeFiles()) == [
        ("io.weight", "4950"),
        ("io.weight", "8:0 910"),
        ("io.max", "8:0 rbps=1048576"),
        ("io.max", "8:16 wbps=max"),
        ("io.max", "8:0 riops=100"),
        ("io.max", "8:0 wiops=200"),
    ]
    bfq = v2_resources.io({"weight": 500, "weightDevice": [{"major": 8, "minor": 0, "weight": 100}]}, FakeFiles(io__bfq__weight="100"))
    assert bfq == [("io.bfq.weight", "500"), ("io.bfq.weight", "8:0 100")]


def test_v2_pids_hugetlb_rdma_unified():
    assert v2_resources.pids({"limit": 100}, V2_FILES) == [("pids.max", "100")]
    assert v2_resources.pids({"limit": 0}, V2_FILES) == [("pids.max", "max")]
    assert v2_resources.pids({"limit": -1}, V2_FILES) == [("pids.max", "max")]
    assert v2_resources.hugepages([{"pageSize": "2MB", "limit": 1 << 21}], V2_FILES) == [("hugetlb.2MB.max", str(1 << 21))]
    assert v2_resources.rdma({"mlx5_1": {"hcaHandles": 3, "hcaObjects": 1000}}, V2_FILES) == [
        ("rdma.max", "mlx5_1 hca_handle=3 hca_object=1000")
    ]
    assert v2_resources.unified({"memory.high": "5000000", "io.latency": "8:0 target=75"}) == [
        ("memory.high", "5000000"),
        ("io.latency", "8:0 target=75"),
    ]


@pytest.mark.parametrize("bad", [{"../memory.max": "1"}, {"a/b": "1"}, {"": "1"}, {"memory.high": 5}])
def test_v2_unified_rejects(bad):
    with pytest.raises(ValueError, match="unified"):
        v2_resources.unified(bad)


def test_v2_plan_ignores_absent_sections():
    assert v2_resources.plan({"network": {}, "memory": None}, V2_FILES) == []


@pytest.mark.parametrize("network, controller", [({"classID": 5}, "net_cls"),
                                                 ({"priorities": [{"name": "eth0", "priority": 1}]}, "net_prio")])
def test_v2_plan_refuses_network(network, controller):
    with pytest.raises(ValueError, match=f"cgroup v2 has no {controller} controller"):
        v2_resources.plan({"network": network}, V2_FILES)


def test_invalid_values_are_rejected_before_any_write():
    with pytest.raises(ValueError, match="pageSize"):
        v2_resources.hugepages([{"pageSize": "../2MB", "limit": 1}], V2_FILES)
    with pytest.raises(ValueError, match="integer"):
        v2_resources.pids({"limit": "100"}, V2_FILES)
    with pytest.raises(ValueError, match="major and minor"):
        v2_resources.io({"throttleReadBpsDevice": [{"rate": 1}]}, V2_FILES)


# -- v1 plans ---------------------------------------------------------------------------------
def v1_files(limit: int, period: int = 100000, burst: int = 0, rt_runtime: int = 0) -> FakeFiles:
    return FakeFiles(
        memory__limit_in_bytes=str(limit),
        memory__memsw__limit_in_bytes=str(limit),
        memory__usage_in_bytes="4096",
        cpu__cfs_period_us=str(period),
        cpu__cfs_burst_us=str(burst),
        cpu__rt_runtime_us=str(rt_runtime),
        blkio__weight="500",
    )


def test_v1_memory_order_follows_the_kernels_limit_le_memsw_rule():
    raising = v1_resources.memory({"limit": 300, "swap": 600}, v1_files(limit=100))
    assert raising == [("memory.memsw.limit_in_bytes", "600"), ("memory.limit_in_bytes", "300")]
    lowering = v1_resources.memory({"limit": 50, "swap": 80}, v1_files(limit=100))
    assert lowering == [("memory.limit_in_bytes", "50"), ("memory.memsw.limit_in_bytes", "80")]
    unlimited = v1_resources.memory({"limit": -1}, v1_files(limit=100))
    assert unlimited == [("memory.memsw.limit_in_bytes", "-1"), ("memory.limit_in_bytes", "-1")]


def test_v1_memory_other_knobs():
    plan = v1_resources.memory(
        {"reservation": 1000, "swappiness": 0, "disableOOMKiller": True, "kernel": 5, "kernelTCP": 5}, v1_files(0)
    )
    assert plan == [("memory.soft_limit_in_bytes", "1000"), ("memory.swappiness", "0"), ("memory.oom_control", "1")]
    with pytest.raises(ValueError, match="0..100"):
        v1_resources.memory({"swappiness": 101}, v1_files(0))
    with pytest.raises(ValueError, match="below the current usage 4096"):
        v1_resources.memory({"limit": 1024, "checkBeforeUpdate": True}, v1_files(0))


def test_v1_cpu_order():
    grow = v1_resources.cpu({"quota": 20000, "period": 200000}, v1_files(0, period=100000))
    assert grow == [("cpu.cfs_period_us", "200000"), ("cpu.cfs_quota_us", "20000")]
    shrink = v1_resources.cpu({"quota": 5000, "period": 10000}, v1_files(0, period=100000))
    assert shrink == [("cpu.cfs_quota_us", "5000"), ("cpu.cfs_period_us", "10000")]
    burst_down = v1_resources.cpu({"quota": 1000, "burst": 0}, v1_files(0, burst=5000))
    assert burst_down == [("cpu.cfs_burst_us", "0"), ("cpu.cfs_quota_us", "1000")]
    rt = v1_resources.cpu({"realtimeRuntime": 500, "realtimePeriod": 1000}, v1_files(0, rt_runtime=2000))
    assert rt == [("cpu.rt_runtime_us", "500"), ("cpu.rt_period_us", "1000")]
    full = v1_resources.cpu({"shares": 512, "idle": 1, "cpus": "0", "mems": "0"}, v1_files(0))
    assert full == [("cpu.shares", "512"), ("cpu.idle", "1"), ("cpuset.cpus", "0"), ("cpuset.mems", "0")]


def test_v1_blkio_plan():
    bio = {
        "weight": 500,
        "leafWeight": 400,
        "weightDevice": [{"major": 8, "minor": 0, "weight": 100, "leafWeight": 50}],
        "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1024}],
        "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 10}],
    }
    assert v1_resources.block_io(bio, v1_files(0)) == [
        ("blkio.weight", "500"),
        ("blkio.leaf_weight", "400"),
        ("blkio.weight_device", "8:0 100"),
        ("blkio.leaf_weight_device", "8:0 50"),
        ("blkio.throttle.read_bps_device", "8:0 1024"),
        ("blkio.throttle.write_iops_device", "8:0 10"),
    ]
    bfq = v1_resources.block_io({"weight": 500}, FakeFiles(blkio__bfq__weight="100"))
    assert bfq == [("blkio.bfq.weight", "500")]


def test_v1_network_hugetlb_and_unified():
    net = v1_resources.network({"classID": 1048577, "priorities": [{"name": "eth0", "priority": 5}]}, v1_files(0))
    assert net == [("net_cls.classid", "1048577"), ("net_prio.ifpriomap", "eth0 5")]
    huge = v1_resources.hugepages([{"pageSize": "1GB", "limit": 1 << 30}], v1_files(0))
    assert huge == [("hugetlb.1GB.limit_in_bytes", str(1 << 30))]
    with pytest.raises(ValueError, match="unified resources require cgroup v2"):
        v1_resources.plan({"unified": {"memory.high": "1"}}, v1_files(0))
