"""A forked process entering its cgroups itself (cgroups/join.py, linux/clone.py): cloned
into the cgroup2 directory and writing itself into the v1 hierarchies, or, without clone3,
writing itself into all of them; the way create and exec put a container's process there."""
from __future__ import annotations

import os
import threading

import pytest

from cgroup_testlib import needs_root
from sampan.linux.clone import fork_into
from sampan.linux.namespaces import CLONE_NEWPID
from sampan.runtime.cgroups import manager_for
from sampan.runtime.cgroups.join import Join

pytestmark = [needs_root]


def _child_report(name: str, cleanup, fork) -> tuple[int, list[str]]:
    """(pid as the child sees itself, lines of its /proc/self/cgroup) of a child that
    `fork(join)` forks for the cgroups `name` (made here) and that enters them: it returns
    what fork_into or os.fork return."""
    m = manager_for(f"/{name}", name)
    cleanup(m)
    m.create()
    join = m.join()
    r, w = os.pipe()
    pid = -1
    try:
        pid = fork(join)
    finally:
        if pid != 0:
            join.close()
    if pid == 0:
        try:
            with open("/proc/self/cgroup") as f:
                os.write(w, f"{os.getpid()}\n{f.read()}".encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        own_pid, *lines = f.read().splitlines()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    m.destroy()
    return int(own_pid), lines


def _in_all(lines: list[str], name: str) -> bool:
    return bool(lines) and all(line.endswith(f"/{name}") for line in lines)


_CLONED_CHILD = """
import json, os, sys
from sampan.linux.clone import fork_into, single_threaded
from sampan.linux.namespaces import CLONE_NEWPID
from sampan.runtime.cgroups import manager_for
name = sys.argv[1]
assert single_threaded()
m = manager_for("/" + name, name)
m.create()
join = m.join()
r, w = os.pipe()
pid = fork_into(join.v2_dir_fd, CLONE_NEWPID)
assert pid is not None, "clone3 is not available here"
if pid == 0:
    join.enter(cloned_into_v2=True)
    with open("/proc/self/cgroup") as f:
        os.write(w, json.dumps([os.getpid(), f.read().splitlines()]).encode())
    os._exit(0)
join.close()
os.close(w)
report = os.read(r, 65536)
_, status = os.waitpid(pid, 0)
m.destroy()
print(report.decode())
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_a_process_cloned_into_its_cgroups_is_in_every_one(name, cleanup):
    """In a fresh interpreter: clone3 is for single-threaded processes only, and a pytest
    worker has threads of its own."""
    import json
    import subprocess
    import sys
    cleanup(manager_for(f"/{name}", name))  # (removed if the child could not)
    done = subprocess.run([sys.executable, "-c", _CLONED_CHILD, name], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    own_pid, lines = json.loads(done.stdout)
    assert own_pid == 1  # the new pid namespace
    assert _in_all(lines, name), lines


def test_without_clone3_the_process_writes_itself_into_every_one(name, cleanup):
    def fork(join: Join) -> int:
        pid = os.fork()
        if pid == 0:
            join.enter(cloned_into_v2=False)
        return pid

    _, lines = _child_report(name, cleanup, fork)
    assert _in_all(lines, name), lines


def test_fork_into_leaves_a_process_with_threads_to_os_fork():
    release = threading.Event()
    thread = threading.Thread(target=release.wait)
    thread.start()
    try:
        assert fork_into(None) is None
    finally:
        release.set()
        thread.join()


def test_a_cgroup_that_is_not_there_fails_the_join_naming_it(name):
    m = manager_for(f"/{name}", name)
    with pytest.raises(OSError) as info:
        m.join()
    assert f"/{name}" in str(info.value) and "cgroup: open" in str(info.value)
