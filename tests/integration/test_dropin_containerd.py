"""containerd (`ctr run --runc-binary`) with the runtime under test (see conftest.py)."""

import secrets
import time
from pathlib import Path


def new_id():
    return f"sampan-dropin-{secrets.token_hex(4)}"


def test_run_echo(containerd):
    cp = containerd.ctr("run", "--rm", *containerd.runtime_flags, containerd.image, new_id(), "echo", "hi")
    assert cp.stdout == "hi\n"


def test_exit_code_passes_through(containerd):
    cp = containerd.ctr("run", "--rm", *containerd.runtime_flags, containerd.image, new_id(),
                        "sh", "-c", "exit 3", check=False)
    assert cp.returncode == 3, cp.stderr


def task_fields(containerd, cid):
    """(pid, status) of the task, as `ctr task ls` lists it, or None."""
    for line in containerd.ctr("task", "ls").stdout.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == cid:
            return fields[1], fields[2]
    return None


def task_status(containerd, cid):
    fields = task_fields(containerd, cid)
    return fields and fields[1]


def test_detached_exec_kill_delete(containerd):
    cid = new_id()
    containerd.ctr("run", "-d", "--null-io", *containerd.runtime_flags, containerd.image, cid,
                   "sh", "-c", 'trap "exit 0" TERM; sleep 1000 & wait')
    assert task_status(containerd, cid) == "RUNNING"

    # The exec writes into the container, read back through the init's /proc root: ctr
    # cancels its copy of a fifo once it sees the exit, so under load it drops a fast
    # process's stdout with runc too (test_dropin_docker checks exec stdio through the shim).
    fifo = ("--fifo-dir", f"{containerd.tmp}/fifo")
    cp = containerd.ctr("task", "exec", *fifo, "--exec-id", "e1", cid,
                        "sh", "-c", "echo hi > /tmp/exec-out; exit 7", check=False)
    assert cp.returncode == 7, cp.stderr
    init_pid, _ = task_fields(containerd, cid)
    assert Path(f"/proc/{init_pid}/root/tmp/exec-out").read_text() == "hi\n"
    pids = containerd.ctr("task", "ps", cid).stdout.splitlines()[1:]
    assert len(pids) == 2, pids  # sh and sleep

    containerd.ctr("task", "kill", "-s", "SIGTERM", cid)
    deadline = time.monotonic() + 10
    while task_status(containerd, cid) != "STOPPED" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert task_status(containerd, cid) == "STOPPED"
    containerd.ctr("task", "delete", cid)  # fails unless the exit status was 0
    containerd.ctr("containers", "rm", cid)
    assert cid not in containerd.ctr("containers", "ls", "-q").stdout.split()
