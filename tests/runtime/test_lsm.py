"""AppArmor profiles and SELinux labels: a container or exec that asks for one is refused
with one line and leaves nothing behind, never run unconfined (this runtime applies
neither; on a host without the module, nothing could)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

APPARMOR = Path("/sys/module/apparmor/parameters/enabled")
SELINUX = Path("/sys/fs/selinux/enforce")


def _host_has(module: str) -> bool:
    if module == "AppArmor":
        return APPARMOR.exists() and APPARMOR.read_text().strip() == "Y"
    return SELINUX.exists()


def _assert_refused(r, field: str, module: str) -> None:
    assert r.returncode == 1, r
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and field in lines[0] and "unconfined" in lines[0], r.err
    if not _host_has(module):
        assert f"{module} is not enabled on this host" in lines[0], r.err


def _cgroup_dirs_naming(token: str, util) -> list[str]:
    return [dirpath for top in util.cgroup_mountpoints() for dirpath, _, _ in os.walk(top)
            if token in dirpath[len(top):]]


@pytest.mark.parametrize("section, key, value, field, module", [
    ("process", "apparmorProfile", "docker-default", "process.apparmorProfile", "AppArmor"),
    ("process", "selinuxLabel", "system_u:system_r:container_t:s0:c1,c2", "process.selinuxLabel", "SELinux"),
    ("linux", "mountLabel", "system_u:object_r:container_file_t:s0:c1,c2", "linux.mountLabel", "SELinux"),
])
def test_create_asking_for_a_label_is_refused(rt, bundle, util, section, key, value, field, module):
    (bundle.process if section == "process" else bundle.linux)[key] = value
    cid = rt.new_id()
    _assert_refused(rt.create(cid, bundle.args("sleep", "100"), check=False), field, module)
    assert rt.status(cid) is None
    assert not (rt.root / cid).exists()
    assert _cgroup_dirs_naming(cid, util) == []


def test_run_asking_for_a_profile_is_refused(rt, bundle):
    bundle.process["apparmorProfile"] = "unconfined-please-not"
    _assert_refused(rt.run(bundle.args("true")), "process.apparmorProfile", "AppArmor")


def test_empty_labels_mean_none(rt, bundle):
    bundle.process.update(apparmorProfile="", selinuxLabel="")
    bundle.linux["mountLabel"] = ""
    r = rt.run(bundle.args("true"))
    assert r.returncode == 0, r


def _processes_in(rt, cid: str) -> list[str]:
    r = rt.exec(cid, "ps", "-o", "comm")
    assert r.returncode == 0, r
    return sorted(r.out.split()[1:])


@pytest.mark.parametrize("flags, field, module", [
    (("--apparmor", "docker-default"), "process.apparmorProfile", "AppArmor"),
    (("--process-label", "system_u:system_r:container_t:s0"), "process.selinuxLabel", "SELinux"),
])
def test_exec_flags_asking_for_a_label_are_refused(rt, bundle, flags, field, module):
    cid, _ = rt.started(bundle.args("sleep", "100"))
    _assert_refused(rt.exec(cid, "true", flags=flags), field, module)
    assert rt.status(cid) == "running"
    assert _processes_in(rt, cid) == ["ps", "sleep"]


@pytest.mark.parametrize("key, field, module", [
    ("apparmorProfile", "process.apparmorProfile", "AppArmor"),
    ("selinuxLabel", "process.selinuxLabel", "SELinux"),
])
def test_exec_process_file_asking_for_a_label_is_refused(rt, bundle, tmp_path, key, field, module):
    cid, _ = rt.started(bundle.args("sleep", "100"))
    process = {**bundle.process, "args": ["true"], key: "some-label"}
    path = tmp_path / "process.json"
    path.write_text(json.dumps(process))
    _assert_refused(rt.exec(cid, flags=("-p", str(path))), field, module)
    assert _processes_in(rt, cid) == ["ps", "sleep"]


def test_features_say_neither_is_applied(runtime_features, runtime_version):
    if runtime_version[0] != "sampan-runc":
        pytest.skip("runc reports what it was built with")
    assert runtime_features["linux"]["apparmor"] == {"enabled": False}
    assert runtime_features["linux"]["selinux"] == {"enabled": False}
