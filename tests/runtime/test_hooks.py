"""OCI hooks: every kind runs once, in order, at its point of the lifecycle, with the state
on stdin; a failing or hanging prestart hook makes create fail and leaves nothing behind."""
from __future__ import annotations

import json
import os
import time

import pytest

HOST_HOOKS = ("prestart", "createRuntime", "createContainer", "poststart", "poststop")


def _hook_script(path, log) -> None:
    """A hook that appends "<name> <state json>" to log; the name is its first argument."""
    path.write_text(f'#!/bin/sh\nstate=$(cat)\nprintf "%s %s\\n" "$1" "$state" >> {log}\n')
    path.chmod(0o755)


def _entries(log) -> list[tuple[str, dict]]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        name, _, state = line.partition(" ")
        out.append((name, json.loads(state)))
    return out


@pytest.fixture
def hooked(bundle):
    """The bundle with every hook kind logging to rootfs/hooks.log (the host's hooks by its
    host path, startContainer, which runs inside the container, by /hooks.log)."""
    log = bundle.rootfs / "hooks.log"
    host_hook = bundle.path / "hook.sh"
    _hook_script(host_hook, log)
    _hook_script(bundle.rootfs / "hook.sh", "/hooks.log")
    bundle.config["hooks"] = {
        name: [{"path": str(host_hook), "args": ["hook.sh", name]}] for name in HOST_HOOKS
    }
    bundle.config["hooks"]["startContainer"] = [{"path": "/hook.sh", "args": ["hook.sh", "startContainer"]}]
    bundle.log = log
    return bundle


def test_hooks_run_in_order_at_their_lifecycle_points(rt, hooked):
    # runtime spec: prestart, createRuntime, createContainer during create; startContainer
    # and poststart during start (poststart after the process was started); poststop at
    # delete. runc 1.1 runs poststart during create (fixed in runc 1.2).
    cid = rt.new_id()
    rt.create(cid, hooked.args("sleep", "100"))
    assert [n for n, _ in _entries(hooked.log)] == ["prestart", "createRuntime", "createContainer"]
    rt.start(cid)
    assert [n for n, _ in _entries(hooked.log)][3:] == ["startContainer", "poststart"]
    rt.kill(cid, "KILL")
    rt.wait_status(cid, "stopped")
    assert len(_entries(hooked.log)) == 5, "a hook ran on kill"
    rt.delete(cid)
    assert [n for n, _ in _entries(hooked.log)][5:] == ["poststop"]


def test_hooks_get_the_state_on_stdin(rt, hooked):
    cid = rt.new_id()
    rt.create(cid, hooked.args("sleep", "100"))
    pid = rt.state(cid)["pid"]
    rt.start(cid)
    rt.delete(cid, "--force")
    entries = dict(_entries(hooked.log))
    assert sorted(entries) == sorted(HOST_HOOKS + ("startContainer",))
    for name, state in entries.items():
        assert state["id"] == cid, name
        assert state["bundle"] == str(hooked.path), name
        assert state["ociVersion"], name
    # the pid as seen where the hook runs: the runtime's namespace, or the container's
    for name in ("prestart", "createRuntime", "poststart"):
        assert entries[name]["pid"] == pid, name
    for name in ("createContainer", "startContainer"):
        assert entries[name]["pid"] == 1, name
    assert entries["prestart"]["status"] == "creating"
    assert entries["createRuntime"]["status"] == "creating"
    assert entries["createContainer"]["status"] == "creating"
    assert entries["startContainer"]["status"] == "created"
    assert entries["poststart"]["status"] in ("created", "running")  # runc 1.1 says created
    assert entries["poststop"]["status"] == "stopped"


def test_prestart_hook_sees_the_container_process_and_namespaces(rt, bundle, tmp_path):
    out = tmp_path / "prestart.out"
    hook = tmp_path / "prestart.sh"
    hook.write_text("#!/bin/sh\npid=$(sed 's/.*\"pid\": *\\([0-9]*\\).*/\\1/')\n"
                    f"readlink /proc/$pid/ns/net > {out}\n")
    hook.chmod(0o755)
    bundle.config["hooks"] = {"prestart": [{"path": str(hook)}]}
    cid = rt.new_id()
    rt.create(cid, bundle.args("sleep", "100"))
    pid = rt.state(cid)["pid"]
    assert out.read_text().strip() == os.readlink(f"/proc/{pid}/ns/net")
    assert out.read_text().strip() != os.readlink("/proc/self/ns/net")


def test_hook_args_and_env(rt, bundle, tmp_path):
    out = tmp_path / "env.out"
    hook = tmp_path / "envhook.sh"
    hook.write_text(f'#!/bin/sh\necho "$0|$1|$2|$HOOKVAR" > {out}\n')
    hook.chmod(0o755)
    bundle.config["hooks"] = {"prestart": [{"path": str(hook), "args": ["argv0", "one", "two"],
                                            "env": ["HOOKVAR=hook-env"]}]}
    cid = rt.new_id()
    rt.create(cid, bundle.args("true"))
    assert out.read_text().strip() == f"{hook}|one|two|hook-env" or \
        out.read_text().strip() == "argv0|one|two|hook-env"


def test_failing_prestart_hook_fails_create_and_leaves_nothing(rt, bundle, tmp_path, util):
    hook = tmp_path / "fail.sh"
    hook.write_text("#!/bin/sh\necho prestart-says-no >&2\nexit 3\n")
    hook.chmod(0o755)
    bundle.config["hooks"] = {"prestart": [{"path": str(hook)}]}
    cid = rt.new_id()
    r = rt.create(cid, bundle.args("sleep", "100"), check=False)
    assert r.returncode == 1
    assert "prestart" in r.err or "hook" in r.err
    assert rt.status(cid) is None
    assert not (rt.root / cid).exists()
    # no cgroup and no process: the suite-wide leak check verifies it after the test too
    for top in util.cgroup_mountpoints():
        for dirpath, _, _ in os.walk(top):
            assert cid not in dirpath


def test_failing_poststart_hook_does_not_undo_start(rt, bundle, tmp_path):
    hook = tmp_path / "fail.sh"
    hook.write_text("#!/bin/sh\nexit 1\n")
    hook.chmod(0o755)
    bundle.config["hooks"] = {"poststart": [{"path": str(hook)}]}
    cid = rt.new_id()
    rt.create(cid, bundle.args("sleep", "100"))
    # runtime spec: a failing poststart hook is a warning; the lifecycle goes on
    rt.start(cid)
    assert rt.status(cid) == "running"


def test_prestart_hook_timeout(rt, bundle, tmp_path):
    hook = tmp_path / "hang.sh"
    hook.write_text("#!/bin/sh\nexec sleep 30\n")
    hook.chmod(0o755)
    bundle.config["hooks"] = {"prestart": [{"path": str(hook), "timeout": 1}]}
    cid = rt.new_id()
    start = time.monotonic()
    r = rt.create(cid, bundle.args("sleep", "100"), check=False)
    assert r.returncode == 1
    assert time.monotonic() - start < 10
    assert "timeout" in r.err.lower() or "timed out" in r.err.lower()
    assert rt.status(cid) is None
