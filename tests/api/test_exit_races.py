"""Exit codes are never lost: through the docker CLI, every `exec` and every `run --rm` reports
the code its process exited with (0..255 mixed, and 128+N for a process killed by signal N),
however quickly the process ends. The stream ends only after the engine has recorded the
exit where `/exec/{id}/json` and `wait` read it."""
from __future__ import annotations

import random
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

DOCKER = "/usr/local/bin/docker"

EXECS = 500
RUNS = 200
PARALLEL = 4  # clients at once: the machine has 2 cores shared with other work


def _commands(count: int, seed: int, init: bool) -> list[tuple[list[str], int]]:
    """(command, the exit code it must report): plain exits, exits after output on both
    streams, and deaths by signal: 128 + the signal. A container's init (init=True) is immune
    to its own signals, as in Docker: there a child shell kills itself and init exits with
    what it reports."""
    rng = random.Random(seed)
    out: list[tuple[list[str], int]] = []
    for i in range(count):
        kind = i % 5
        if kind == 3:
            sig = rng.choice([9, 15, 1, 2])
            # ("; exit $?": a last command would be exec'd in place of the shell, as init)
            script = f'sh -c "kill -{sig} \\$\\$"; exit $?' if init else f"kill -{sig} $$"
            out.append((["sh", "-c", script], 128 + sig))
        elif kind == 4:
            code = rng.randrange(256)
            out.append((["sh", "-c", f"echo out; echo err >&2; exit {code}"], code))
        else:
            # 0 and small codes often (the lost code came back as 0), the whole range too
            code = rng.choice([0, 1, 4, rng.randrange(256)])
            out.append((["sh", "-c", f"exit {code}"], code))
    return out


def _check_all(run_one, commands: list[tuple[list[str], int]]) -> None:
    with ThreadPoolExecutor(PARALLEL) as pool:
        results = list(pool.map(lambda c: (c, run_one(c[0])), commands))
    wrong = [(cmd, want, got.returncode, got.stderr[-300:]) for (cmd, want), got in results
             if got.returncode != want]
    assert not wrong, f"{len(wrong)} of {len(commands)} wrong, first ones: {wrong[:5]}"


@pytest.fixture
def web(sampand):
    r = sampand.docker("run", "-d", "--network", "none", "--name", "web", "busybox", "sleep", "1000")
    assert r.returncode == 0, r.stderr
    yield "web"


@pytest.mark.slow  # 500 execs: 22 s on a 2-core VM, far more on a slow CI machine
def test_exec_exit_codes(sampand, web):
    def run_one(cmd: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([DOCKER, "exec", web, *cmd], env=sampand.env, capture_output=True, timeout=60)
    _check_all(run_one, _commands(EXECS, seed=7, init=False))


@pytest.mark.slow  # 200 run --rm: 14 s on a 2-core VM, far more on a slow CI machine
def test_run_rm_exit_codes(sampand):
    def run_one(cmd: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([DOCKER, "run", "--rm", "--network", "none", "busybox", *cmd], env=sampand.env,
                              capture_output=True, timeout=60)
    _check_all(run_one, _commands(RUNS, seed=11, init=True))
    r = sampand.docker("ps", "-aq")
    assert r.stdout.strip() == b"", "run --rm left containers: " + r.stdout.decode()
