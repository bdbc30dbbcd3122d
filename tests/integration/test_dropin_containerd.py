"""containerd (`ctr run --runc-binary`) with the runtime under test (see conftest.py)."""

import secrets
import time


def new_id():
    return f"sampan-dropin-{secrets.token_hex(4)}"


def test_run_echo(containerd):
    cp = containerd.ctr("run", "--rm", *containerd.runtime_flags, containerd.image, new_id(), "echo", "hi")
    assert cp.stdout == "hi\n"


def test_exit_code_passes_through(containerd):
    cp = containerd.ctr("run", "--rm", *containerd.runtime_flags, containerd.image, new_id(),
                        "sh", "-c", "exit 3", check=False)
    assert cp.returncode == 3, cp.stderr


def task_status(containerd, cid):
    for line in containerd.ctr("task", "ls").stdout.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == cid:
            return fields[2]
    return None


def test_detached_exec_kill_delete(containerd):
    cid = new_id()
    containerd.ctr("run", "-d", "--null-io", *containerd.runtime_flags, containerd.image, cid,
                   "sh", "-c", 'trap "exit 0" TERM; sleep 1000 & wait')
    assert task_status(containerd, cid) == "RUNNING"

    fifo = ("--fifo-dir", f"{containerd.tmp}/fifo")
    cp = containerd.ctr("task", "exec", *fifo, "--exec-id", "e1", cid, "sh", "-c", "echo hi; exit 7", check=False)
    assert (cp.returncode, cp.stdout) == (7, "hi\n"), cp.stderr
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
