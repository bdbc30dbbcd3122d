"""exec through sampand as Docker behaves, with docker-py and the docker CLI: a tty exec
through a real pty (\\n -> \\r\\n), stdout and stderr apart (demux), streamed output as it is
written, 126/127 for a process that cannot be started (an attached start succeeds, the code is in
/exec/{id}/json, the error text on the stream; a detached one is a 400), detached execs that keep running."""
from __future__ import annotations

import time

import docker
import pytest



@pytest.fixture
def client(sampand):
    c = docker.DockerClient(base_url=sampand.host, timeout=60)
    yield c
    c.close()


@pytest.fixture
def box(client):
    container = client.containers.run("busybox", ["sleep", "1000"], detach=True)
    yield container
    container.remove(force=True)


def test_tty_exec_goes_through_a_pty(box):
    code, out = box.exec_run(["sh", "-c", "echo one; echo two"], tty=True)
    assert (code, out) == (0, b"one\r\ntwo\r\n")
    code, out = box.exec_run(["tty"], tty=True)
    assert out.startswith(b"/dev/pts/")


def test_demux_keeps_stdout_and_stderr_apart(box):
    code, (out, err) = box.exec_run(["sh", "-c", "echo out; echo err >&2; echo more"], demux=True)
    assert (code, out, err) == (0, b"out\nmore\n", b"err\n")
    code, out = box.exec_run(["sh", "-c", "echo out; exit 3"])
    assert (code, out) == (3, b"out\n")


def test_streamed_output_arrives_as_written(box):
    result = box.exec_run(["sh", "-c", "echo hello; sleep 1; echo world"], stream=True)
    started = time.monotonic()
    first = next(result.output)
    assert first == b"hello\n" and time.monotonic() - started < 0.9  # before "world" is written
    assert b"".join(result.output) == b"world\n"


@pytest.mark.parametrize("cmd,expected", [(["nonexistent-binary"], 127), (["/etc/passwd"], 126)])
def test_exec_that_cannot_start_exits_126_127(client, box, cmd, expected):
    exec_id = client.api.exec_create(box.id, cmd)["Id"]
    out = client.api.exec_start(exec_id)  # start succeeds (no 500), the error is the output
    assert b"OCI runtime exec failed" in out
    info = client.api.exec_inspect(exec_id)
    assert info["ExitCode"] == expected and info["Running"] is False


def test_detached_exec_that_cannot_start_is_a_400(client, sampand, box):
    """As dockerd: a detached start has no stream to carry the error, so the start answers it
    (400, the runtime's message); the exec has exited all the same."""
    r = sampand.docker("exec", "-d", box.id, "/nonexistent")
    assert r.returncode == 1
    # dockerd (runc) words it 'OCI runtime exec failed: exec failed: unable to start container
    # process: exec: "/nonexistent": stat ...: unknown'; the runtime's message lacks the middle part
    (line,) = r.stderr.decode().splitlines()
    assert line.startswith("Error response from daemon: OCI runtime exec failed: ")
    assert line.endswith('exec: "/nonexistent": stat /nonexistent: no such file or directory: unknown')
    exec_id = client.api.exec_create(box.id, ["/etc"])["Id"]
    with pytest.raises(docker.errors.APIError) as raised:
        client.api.exec_start(exec_id, detach=True)
    assert raised.value.status_code == 400 and "OCI runtime exec failed" in str(raised.value)
    info = client.api.exec_inspect(exec_id)
    assert info["ExitCode"] == 126 and info["Running"] is False


def test_docker_cli_exit_codes_and_tty(sampand, box):
    run = sampand.docker
    assert run("exec", box.id, "nonexistent-binary").returncode == 127
    assert run("exec", box.id, "sh", "-c", "exit 4").returncode == 4
    got = run("exec", box.id, "sh", "-c", "echo out; echo err >&2")
    assert (got.stdout, got.stderr) == (b"out\n", b"err\n")


def test_detached_exec_keeps_running(client, box):
    box.exec_run(["sh", "-c", "sleep 2; touch /tmp/done"], detach=True)
    code, _ = box.exec_run(["test", "-e", "/tmp/done"])
    assert code == 1  # still sleeping, not killed when the API call returned
    deadline = time.monotonic() + 10
    while box.exec_run(["test", "-e", "/tmp/done"])[0] != 0:
        assert time.monotonic() < deadline, "the detached exec did not finish"
        time.sleep(0.2)


@pytest.mark.slow  # 500 execs and 200 runs: 34 s on a 2-core VM, far more on a slow CI machine
def test_exit_codes_never_lost_docker_cli(sampand, box):
    """The race of issue 7: an exec's stream must end only after its exit is recorded where
    /exec/{id}/json reads it (and the same for run --rm and wait). 500 execs and 200 runs with
    varied codes, four at a time, every code checked."""
    from concurrent.futures import ThreadPoolExecutor

    def docker(*args: str) -> int:
        return sampand.docker(*args, timeout=120).returncode

    def exec_once(n: int) -> tuple[int, int]:
        return n % 11, docker("exec", box.id, "sh", "-c", f"exit {n % 11}")

    def run_once(n: int) -> tuple[int, int]:
        return n % 13, docker("run", "--rm", "--network", "none", "busybox", "sh", "-c", f"exit {n % 13}")

    with ThreadPoolExecutor(4) as pool:
        execs = list(pool.map(exec_once, range(500)))
        runs = list(pool.map(run_once, range(200)))
    assert [got for want, got in execs if got != want] == []
    assert [got for want, got in runs if got != want] == []
