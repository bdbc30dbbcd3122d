"""Logging drivers as a user meets them: `--log-driver`/`--log-opt` on create and run, what
inspect shows of HostConfig.LogConfig, and the errors of a driver or option the daemon cannot
take or of `logs` on a driver that cannot be read, through the docker CLI against sampand
and a private real dockerd (same messages, exit codes and LogConfig), and the sampan CLI."""
from __future__ import annotations

import json
import os

import pytest

from private_daemons import DOCKER_CLI, DOCKERD, SAMPAN, Dockerd, busybox_rootfs, daemon_fixture, run

REFUSED_CREATES = [
    ("--log-driver", "bogus"),
    ("--log-opt", "bogus=1"),
    ("--log-driver", "none", "--log-opt", "max-size=1m"),
]


@pytest.fixture(scope="module")
def dockerd():
    if os.geteuid() != 0 or not DOCKERD or not DOCKER_CLI:
        pytest.fail("needs root, dockerd and the docker CLI")
    yield from daemon_fixture(Dockerd(busybox_rootfs()))


def on_sampand(sampand, *args: str, check: bool = True):
    return run([DOCKER_CLI, *args], env=sampand.env, check=check)


def sampan_cli(sampand, *args: str, check: bool = True):
    return run([*SAMPAN, *args], env=sampand.env, check=check)


def log_config(result) -> dict:
    return json.loads(result.stdout)


@pytest.mark.timeout(180)
def test_log_config_in_inspect_as_dockerd(sampand, dockerd):
    for flags in ((), ("--log-driver", "none"), ("--log-opt", "max-size=1m", "--log-opt", "max-file=2"),
                  ("--log-driver", "json-file", "--log-opt", "compress=true")):
        ours = on_sampand(sampand, "create", *flags, "busybox", "true").stdout.strip()
        theirs = dockerd.docker("create", *flags, dockerd.image, "true").stdout.strip()
        fmt = "{{json .HostConfig.LogConfig}}"
        assert log_config(on_sampand(sampand, "inspect", "-f", fmt, ours)) == \
            log_config(dockerd.docker("inspect", "-f", fmt, theirs)), flags
        via_sampan = sampan_cli(sampand, "create", *flags, "busybox", "true").stdout.strip()
        assert log_config(on_sampand(sampand, "inspect", "-f", fmt, via_sampan)) == \
            log_config(on_sampand(sampand, "inspect", "-f", fmt, ours)), flags


@pytest.mark.timeout(180)
@pytest.mark.parametrize("flags", REFUSED_CREATES, ids=lambda f: " ".join(f))
def test_refused_log_config_as_dockerd(sampand, dockerd, flags):
    ours = on_sampand(sampand, "create", *flags, "busybox", "true", check=False)
    theirs = dockerd.docker("create", *flags, dockerd.image, "true", check=False)
    assert (ours.returncode, ours.stderr) == (theirs.returncode, theirs.stderr)
    assert ours.returncode != 0
    via_sampan = sampan_cli(sampand, "create", *flags, "busybox", "true", check=False)
    assert via_sampan.returncode != 0
    assert theirs.stderr.splitlines()[0].removeprefix("docker: ") in via_sampan.stderr
    # nothing was left behind
    assert on_sampand(sampand, "ps", "-aq").stdout.strip() == ""


@pytest.mark.timeout(180)
def test_logs_of_the_none_driver_as_dockerd(sampand, dockerd):
    ours = on_sampand(sampand, "run", "-d", "--log-driver", "none", "busybox", "echo", "hi").stdout.strip()
    theirs = dockerd.docker("run", "-d", "--log-driver", "none", dockerd.image, "echo", "hi").stdout.strip()
    on_sampand(sampand, "wait", ours)
    dockerd.docker("wait", theirs)
    a = on_sampand(sampand, "logs", ours, check=False)
    b = dockerd.docker("logs", theirs, check=False)
    assert (a.returncode, a.stdout, a.stderr) == (b.returncode, b.stdout, b.stderr)
    assert "configured logging driver does not support reading" in b.stderr
    c = sampan_cli(sampand, "logs", ours, check=False)
    assert c.returncode != 0 and "configured logging driver does not support reading" in c.stderr
