"""cgroupsPath resolution and host detection, as pure functions and on fake trees."""
from __future__ import annotations

import pytest

from sampan.runtime.cgroups import detect_mode, manager_for, manager_from_state
from sampan.runtime.cgroups.hierarchy import own_cgroups, v1_mounts
from sampan.runtime.cgroups.paths import container_path, expand_slice, place, systemd_path


@pytest.mark.parametrize(
    ("given", "cid", "expected"),
    [
        ("/docker/abc", "x", ("/docker/abc", True)),
        ("/a//b/./c/", "x", ("/a/b/c", True)),
        ("/a/b/../c", "x", ("/a/c", True)),
        ("rel/path", "x", ("/rel/path", False)),
        ("", "ctr", ("/ctr", False)),
        (None, "ctr", ("/ctr", False)),
    ],
)
def test_cgroupfs_paths(given, cid, expected):
    assert container_path(given, cid) == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("/../etc", "escapes"),
        ("/a/../../b", "escapes"),
        ("../sibling", "escapes"),
        ("a/../..", "escapes"),
        ("/", "root"),
        ("/a/..", "root"),
        (".", "own cgroup"),
        ("a/..", "own cgroup"),
        ("/a\0b", "NUL"),
    ],
)
def test_cgroupfs_paths_rejected(given, message):
    with pytest.raises(ValueError, match=message):
        container_path(given, "x")


def test_relative_paths_hang_below_own_cgroup_minus_mount_root():
    assert place("/ctr", False, "/user.slice/session-1.scope", "/") == "/user.slice/session-1.scope/ctr"
    # Inside a container whose cgroup is bind-mounted, the mount shows /docker/abc as its root.
    assert place("/ctr", False, "/docker/abc/sub", "/docker/abc") == "/sub/ctr"
    assert place("/abs", True, "/whatever", "/") == "/abs"
    with pytest.raises(ValueError, match="escapes"):
        place("/ctr", False, "/../outside", "/")


@pytest.mark.parametrize(
    ("slice_", "expected"),
    [
        ("system.slice", "/system.slice"),
        ("a-b.slice", "/a.slice/a-b.slice"),
        ("kubepods-burstable-pod1.slice", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice"),
        ("-.slice", "/"),
    ],
)
def test_expand_slice(slice_, expected):
    assert expand_slice(slice_) == expected


@pytest.mark.parametrize("bad", ["system", "a--b.slice", "-a.slice", "a-.slice", "a/b.slice"])
def test_expand_slice_rejects(bad):
    with pytest.raises(ValueError, match="slice"):
        expand_slice(bad)


def test_systemd_paths():
    assert systemd_path("system.slice:docker:abc", "x") == "/system.slice/docker-abc.scope"
    assert systemd_path("a-b.slice:crio:id1", "x") == "/a.slice/a-b.slice/crio-id1.scope"
    assert systemd_path(":runc:id", "x") == "/system.slice/runc-id.scope"
    assert systemd_path("-.slice::id", "x") == "/id.scope"
    assert systemd_path(None, "ctr") == "/system.slice/sampan-ctr.scope"
    assert container_path("user.slice:p:n", "x", systemd=True) == ("/user.slice/p-n.scope", True)


@pytest.mark.parametrize("bad", ["system.slice:docker", "a:b:c:d", "nope:p:n", "system.slice:p:", "system.slice:p:../x"])
def test_systemd_paths_rejected(bad):
    with pytest.raises(ValueError, match="systemd|slice"):
        systemd_path(bad, "x")


def test_detect_mode_on_fake_trees(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("cpu memory\n")
    hybrid = tmp_path / "hybrid"
    (hybrid / "unified").mkdir(parents=True)
    (hybrid / "unified" / "cgroup.controllers").write_text("")
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    assert detect_mode(str(v2)) == "v2"
    assert detect_mode(str(hybrid)) == "hybrid"
    assert detect_mode(str(v1)) == "v1"


def test_manager_for_absolute_path_on_this_host():
    m = manager_for("/sampan-test-paths/inner", "x")
    dirs = m.paths()
    mounts = v1_mounts()
    for key, mount in mounts.items():
        assert dirs[key] == mount.mountpoint + "/sampan-test-paths/inner"
    if m.mode == "hybrid":
        assert dirs[""] == "/sys/fs/cgroup/unified/sampan-test-paths/inner"


def test_manager_for_relative_path_follows_own_cgroup_per_hierarchy():
    m = manager_for(None, "sampan-test-rel")
    own = own_cgroups()
    for key, mount in v1_mounts().items():
        expected = mount.mountpoint + own[key].rstrip("/") + "/sampan-test-rel"
        assert m.paths()[key] == expected


def test_manager_for_rejects_bad_paths():
    with pytest.raises(ValueError):
        manager_for("/../x", "x")
    with pytest.raises(ValueError):
        manager_for("bad", "x", systemd=True)


@pytest.mark.parametrize(
    "state",
    [
        {"mode": "v3", "root": "/", "paths": {}, "created": []},
        {"mode": "v2", "root": "/", "paths": {"memory": "/x"}, "created": []},
        {"mode": "v1", "root": "/", "paths": {"": "/x"}, "created": []},
        {"mode": "v1", "paths": {}},
        "nonsense",
    ],
)
def test_manager_from_state_rejects_bad_state(state):
    with pytest.raises(ValueError, match="cgroup state"):
        manager_from_state(state)
