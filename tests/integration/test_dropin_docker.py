"""dockerd with the runtime under test registered as `--runtime sampan` (see conftest.py)."""

import json
import secrets
import time

RUN = ("run", "--runtime", "sampan", "--network", "none")
# PID 1 that exits 0 on SIGTERM, so `docker stop` needs no SIGKILL.
SERVE = ("sh", "-c", 'trap "exit 0" TERM; sleep 1000 & wait')


def inspect(dockerd, cid):
    return json.loads(dockerd.docker("inspect", cid).stdout)[0]


def test_run_echo(dockerd):
    cp = dockerd.docker(*RUN, "--rm", dockerd.image, "echo", "hi")
    assert cp.stdout == "hi\n"


def test_exit_code_passes_through(dockerd):
    cp = dockerd.docker(*RUN, "--rm", dockerd.image, "sh", "-c", "exit 3", check=False)
    assert cp.returncode == 3, cp.stderr


def test_tty(dockerd):
    cp = dockerd.docker(*RUN, "--rm", "-t", dockerd.image, "echo", "hi")
    assert cp.stdout == "hi\r\n"


def test_detached_exec_stop_rm(dockerd):
    name = f"sampan-dropin-{secrets.token_hex(4)}"
    cid = dockerd.docker(*RUN, "-d", "--name", name, dockerd.image, *SERVE).stdout.strip()
    state = inspect(dockerd, cid)["State"]
    assert state["Running"] and state["Pid"] > 0, state

    cp = dockerd.docker("exec", cid, "sh", "-c", 'echo "hi from $(hostname)"; cat /proc/1/cmdline | tr "\\0" " "')
    first, pid1 = cp.stdout.splitlines()
    assert first == f"hi from {cid[:12]}"
    assert pid1.startswith("sh -c trap"), "PID 1 in the container is its own init"
    assert dockerd.docker("exec", cid, "sh", "-c", "exit 7", check=False).returncode == 7
    assert dockerd.docker("exec", "-t", cid, "echo", "tty").stdout == "tty\r\n"

    t0 = time.monotonic()
    dockerd.docker("stop", "-t", "20", cid)
    assert time.monotonic() - t0 < 15, "SIGTERM reached PID 1 (no SIGKILL after the timeout)"
    state = inspect(dockerd, cid)["State"]
    assert not state["Running"] and state["ExitCode"] == 0, state

    dockerd.docker("rm", cid)
    assert cid not in dockerd.docker("ps", "-aq", "--no-trunc").stdout.split()
