"""Container config as dockerd reports and enforces it, through the docker CLI and docker-py:
HostConfig.Runtime (the built-in default, runc added with --add-runtime, an unknown one
refused), HostConfig.LogConfig (json-file by default, `none`, an unknown driver refused), an
Env entry without "=" kept as given, and run(auto_remove=True) of a failing command."""
from __future__ import annotations

import json
import os
import shutil
import time

import docker
import pytest

from conftest import start_daemon, stop_daemon

RUNC = shutil.which("runc") or "/usr/sbin/runc"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """This module's sampand knows runc (as dockerd with --add-runtime runc=...)."""
    d = start_daemon(tmp_path_factory, args=("--add-runtime", f"runc={RUNC}"))
    yield d
    stop_daemon(d)


def _ok(r) -> str:
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode()


def _inspect(sampand, ref: str) -> dict:
    return json.loads(_ok(sampand.docker("inspect", ref)))[0]


def test_runtime_default_and_info(sampand):
    cid = _ok(sampand.docker("create", "busybox", "true")).strip()
    assert _inspect(sampand, cid)["HostConfig"]["Runtime"] == "sampan"
    info = json.loads(_ok(sampand.docker("info", "--format", "{{json .}}")))
    assert info["DefaultRuntime"] == "sampan"
    assert set(info["Runtimes"]) == {"sampan", "runc"}
    assert info["Runtimes"]["runc"]["path"] == RUNC


def test_unknown_runtime_is_refused(sampand):
    r = sampand.docker("run", "--runtime", "nope", "--rm", "busybox", "true")
    assert r.returncode == 125
    assert b"unknown or invalid runtime name: nope" in r.stderr
    assert _ok(sampand.docker("ps", "-aq")) == ""


@pytest.mark.skipif(not os.access(RUNC, os.X_OK), reason="runc is not installed")
def test_run_through_runc(sampand):
    assert _ok(sampand.docker("run", "--runtime", "runc", "--rm", "busybox", "echo", "hi")) == "hi\n"
    cid = _ok(sampand.docker("run", "-d", "--runtime", "runc", "--network", "none", "busybox",
                             "sleep", "100")).strip()
    assert _inspect(sampand, cid)["HostConfig"]["Runtime"] == "runc"
    r = sampand.docker("exec", cid, "sh", "-c", "echo in; exit 5")
    assert r.returncode == 5 and r.stdout == b"in\n"
    _ok(sampand.docker("rm", "-f", cid))


def test_log_config(sampand):
    cid = _ok(sampand.docker("create", "busybox", "true")).strip()
    assert _inspect(sampand, cid)["HostConfig"]["LogConfig"] == {"Type": "json-file", "Config": {}}
    r = sampand.docker("run", "--rm", "--log-driver", "foo", "busybox", "true")
    assert r.returncode == 125
    assert b'error looking up logging plugin foo: plugin "foo" not found' in r.stderr
    r = sampand.docker("create", "--log-opt", "max-size=lots", "busybox", "true")
    assert r.returncode == 1 and r.stderr == b"Error response from daemon: invalid size: 'lots'\n"
    r = sampand.docker("create", "--log-opt", "colour=blue", "busybox", "true")
    assert r.returncode == 1 and b"unknown log opt 'colour' for json-file log driver" in r.stderr

    cid = _ok(sampand.docker("run", "-d", "--log-driver", "none", "busybox", "echo", "unseen")).strip()
    assert _ok(sampand.docker("wait", cid)) == "0\n"
    assert _inspect(sampand, cid)["HostConfig"]["LogConfig"]["Type"] == "none"
    r = sampand.docker("logs", cid)
    assert r.returncode == 1
    assert b"configured logging driver does not support reading" in r.stderr
    assert not os.path.exists(_inspect(sampand, cid)["LogPath"])


def test_env_without_value_kept_as_given(sampand):
    cid = _ok(sampand.docker("create", "-e", "SAMPAN_UNSET_VAR", "-e", "A=1", "busybox", "env")).strip()
    env = _inspect(sampand, cid)["Config"]["Env"]
    assert "SAMPAN_UNSET_VAR" in env and "A=1" in env
    out = _ok(sampand.docker("start", "-a", cid))
    assert "A=1\n" in out and "SAMPAN_UNSET_VAR" not in out  # unset in the process, as dockerd does


def test_docker_py_run_of_a_failing_command(sampand):
    client = docker.DockerClient(base_url=sampand.host, version="auto", timeout=60)
    # remove=True: docker-py reads the logs, then removes: the stderr comes with the error
    with pytest.raises(docker.errors.ContainerError) as e:
        client.containers.run("busybox", "sh -c 'echo oops >&2; exit 3'", remove=True)
    assert e.value.exit_status == 3 and e.value.stderr == b"oops\n"
    # auto_remove=True: the daemon removes it, after docker-py has followed its logs and
    # waited (docker-py then reports no stderr, as with dockerd); never a NotFound
    for _ in range(10):
        with pytest.raises(docker.errors.ContainerError) as e:
            client.containers.run("busybox", "sh -c 'echo oops >&2; exit 3'", auto_remove=True)
        assert e.value.exit_status == 3
    deadline = time.monotonic() + 5  # (removed once the wait has answered, as by dockerd)
    # the raw list: docker-py's containers.list() inspects each listed id and raises NotFound
    # for one removed between the list and the inspect
    while client.api.containers(all=True) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.api.containers(all=True) == []
    client.close()


@pytest.mark.parametrize("opt, module", [("apparmor=docker-default", "AppArmor"), ("label=type:svirt_lxc_net_t", "SELinux")])
def test_confinement_that_cannot_be_applied_is_refused(sampand, opt, module):
    """A container its user asked to confine never runs unconfined: a one-line refusal at
    create, nothing made; the values that ask for no confinement are accepted."""
    r = sampand.docker("run", "--rm", "--security-opt", opt, "busybox", "true")
    assert r.returncode == 125
    err = r.stderr.decode().splitlines()[0]   # the docker CLI adds its "Run 'docker run --help'" line
    assert err.startswith("docker: Error response from daemon: invalid --security-opt") and module in err \
        and opt in err, err
    assert _ok(sampand.docker("ps", "-aq")) == ""
    off = "apparmor=unconfined" if module == "AppArmor" else "label=disable"
    assert _ok(sampand.docker("run", "--rm", "--security-opt", off, "busybox", "echo", "ok")) == "ok\n"
