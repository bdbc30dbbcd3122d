"""What only a hybrid host shows: the container's dir in the unified tree beside the v1 ones,
and controllers only cgroup2 has (hugetlb here) set there."""
from __future__ import annotations

import os
import signal

import pytest

from cgroup_testlib import MODE, UNIFIED_MOUNT, needs_root
from sampan.runtime.cgroups import manager_for

pytestmark = [needs_root, pytest.mark.skipif(MODE != "hybrid", reason="host is not hybrid")]


def test_unified_dir_is_created_joined_and_removed(name, spawn, cleanup):
    m = manager_for(f"/{name}", name)
    cleanup(m)
    assert m.mode == "hybrid"
    unified = m.paths()[""]
    assert unified == os.path.join(UNIFIED_MOUNT, name)
    m.create()
    assert os.path.isdir(unified)
    child = spawn("exec sleep 60", cgroup=m)
    with open(f"/proc/{child.pid}/cgroup") as f:
        assert f"0::/{name}\n" in f.read()
    m.kill_all(signal.SIGKILL)
    child.finish()
    m.destroy()
    assert not os.path.exists(unified)


def test_unified_only_controller_is_set_in_the_unified_tree(name, cleanup):
    with open(os.path.join(UNIFIED_MOUNT, "cgroup.controllers")) as f:
        if "hugetlb" not in f.read().split():
            pytest.skip("hugetlb is not a cgroup2 controller here")
    m = manager_for(f"/{name}", name)
    cleanup(m)
    m.create()
    size = "2MB"
    m.set({"hugepageLimits": [{"pageSize": size, "limit": 4 << 20}]})
    with open(os.path.join(m.paths()[""], f"hugetlb.{size}.max")) as f:
        assert f.read().strip() == str(4 << 20)


def test_unified_resources_are_refused(name, cleanup):
    m = manager_for(f"/{name}", name)
    cleanup(m)
    m.create()
    with pytest.raises(ValueError, match="unified resources require cgroup v2"):
        m.set({"unified": {"cgroup.max.depth": "3"}})
