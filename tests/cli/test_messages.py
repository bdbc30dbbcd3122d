"""The CLI's one failure convention, Docker's, checked against a private sampand (and the
docker CLI where it is installed): messages on stderr and exit codes for verbs of each kind,
errors where no daemon was involved, an unreachable daemon; the one template renderer
behind every --format; and Docker-style help lines."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPAN = [sys.executable, "-m", "sampan.cli.main"]
DOCKER = shutil.which("docker") or "/usr/local/bin/docker"
RUN_HELP = "\n\nRun 'sampan run --help' for more information\n"


def _api_conftest():
    spec = importlib.util.spec_from_file_location("_api_conftest", REPO / "tests" / "api" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_API = _api_conftest()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = _API.start_daemon(tmp_path_factory)
    yield d
    _API.stop_daemon(d)


@pytest.fixture
def sampan(daemon, host_watch):
    """sampan(*args) -> (exit code, stdout, stderr) against the daemon; the containers a test
    made are removed after it."""
    host_watch.watch_root(os.path.join(daemon.exec_root, "runtime"))

    def run(*args: str, host: str | None = None) -> tuple[int, str, str]:
        env = dict(os.environ, SAMPAN_ROOT=daemon.root, SAMPAN_EXEC_ROOT=daemon.exec_root)
        if host:
            env["SAMPAN_HOST"] = host
        r = subprocess.run([*SAMPAN, *args], env=env, capture_output=True, text=True, timeout=60)
        return r.returncode, r.stdout, r.stderr
    yield run
    for cid in _API._remove_all(daemon):
        host_watch.watch_id(cid)


def docker(daemon, *args: str) -> tuple[int, str, str]:
    r = subprocess.run([DOCKER, *args], env=dict(os.environ, DOCKER_HOST=daemon.host,
                                                 DOCKER_CONFIG=os.path.join(daemon.root, ".docker")),
                       capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout, r.stderr


# ------------------------------------------------------------------ a daemon error
def test_daemon_errors_of_most_verbs(sampan):
    for args, message in ((["stop", "nosuch"], "No such container: nosuch"),
                          (["rm", "nosuch"], "No such container: nosuch"),
                          (["logs", "nosuch"], "No such container: nosuch"),
                          (["rmi", "nosuch"], "No such image: nosuch:latest"),
                          (["history", "nosuch"], "No such image: nosuch:latest"),
                          (["volume", "rm", "nosuch"], None)):
        rc, out, err = sampan(*args)
        assert rc == 1 and err.startswith("Error response from daemon: ") and err.count("\n") == 1, (args, err)
        if message:
            assert err == f"Error response from daemon: {message}\n"


def test_run_and_create_daemon_errors(sampan):
    rc, _, err = sampan("run", "--rm", "--pull", "never", "nosuch:1", "true")
    assert rc == 125 and err == "sampan: Error response from daemon: No such image: nosuch:1" + RUN_HELP
    rc, _, err = sampan("create", "--pull", "never", "nosuch:1")
    assert rc == 125 and err == ("sampan: Error response from daemon: No such image: nosuch:1\n\n"
                                 "Run 'sampan create --help' for more information\n")
    for command, code in (("nosuchcommand", 127), ("/etc", 126)):
        rc, _, err = sampan("run", "--rm", "busybox", command)
        assert rc == code and err.startswith("sampan: Error response from daemon: ") and err.endswith(RUN_HELP)


@pytest.mark.skipif(not os.access(DOCKER, os.X_OK), reason="no docker CLI")
def test_same_messages_as_the_docker_cli(sampan, daemon):
    for args in (["stop", "nosuch"], ["rmi", "nosuch"], ["tag", "nosuch", "x"], ["image", "inspect", "nosuch"],
                 ["inspect", "nosuch"], ["volume", "inspect", "nosuch"],
                 ["run", "--rm", "--pull", "never", "nosuch:1", "true"], ["run", "--rm", "busybox", "/etc"]):
        ours, theirs = sampan(*args), docker(daemon, *args)
        assert ours[0] == theirs[0] and ours[1] == theirs[1], args
        assert ours[2] == theirs[2].replace("docker", "sampan"), args


# ------------------------------------------------------------------ no daemon involved
def test_errors_of_the_cli_itself_do_not_blame_the_daemon(sampan, tmp_path):
    rc, _, err = sampan("run", "--rm", "--memory", "abc", "busybox", "true")
    assert rc == 125 and err == ('invalid argument "abc" for "-m, --memory" flag: invalid size: \'abc\'' + RUN_HELP)
    rc, _, err = sampan("run", "--rm", "--env-file", str(tmp_path / "none"), "busybox", "true")
    assert rc == 125 and err == f"open {tmp_path / 'none'}: No such file or directory" + RUN_HELP
    for args, message in ((["load", "-i", str(tmp_path / "none.tar")], f"open {tmp_path / 'none.tar'}: "
                                                                         "no such file or directory"),
                          (["ps", "-f", "status"], "bad format of filter (expected name=value)"),
                          (["logs", "--since", "yesterday-ish", "x"], None),
                          (["tag", "busybox", "Bad:Name"], None)):
        rc, _, err = sampan(*args)
        assert rc == 1 and "daemon" not in err and err.count("\n") == 1, (args, err)
        if message:
            assert err == message + "\n"
    rc, _, err = sampan("ps", "--bogus")
    assert rc == 125 and "--bogus" in err and "daemon" not in err


def test_an_unreachable_daemon(sampan, tmp_path):
    host = f"unix://{tmp_path}/none.sock"
    cannot = f"Cannot connect to the sampan daemon at {host}. Is the sampan daemon running?"
    assert sampan("ps", host=host) == (1, "", cannot + "\n")
    assert sampan("images", host=host) == (1, "", cannot + "\n")
    assert sampan("run", "--rm", "busybox", "true", host=host) == (125, "", "sampan: " + cannot + RUN_HELP)
    assert not os.path.exists(f"{tmp_path}/none.sock")          # a daemon named by --host is not started


# ------------------------------------------------------------------ one renderer
def test_every_format_goes_through_the_full_renderer(sampan, daemon):
    rc, out, err = sampan("create", "--name", "fmt1", "-l", "b=2", "-l", "a=1", "-v", "/data", "busybox", "sh", "-c",
                          "true")
    assert rc == 0, err
    assert sampan("ps", "-a", "--format", "{{.Names}} {{upper .State}}")[1] == "fmt1 CREATED\n"
    rc, out, _ = sampan("ps", "-a", "--format", "table {{.Names}}\\t{{.Image}}")
    assert out.splitlines() == ["NAMES     IMAGE", "fmt1      busybox"]
    assert json.loads(sampan("ps", "-a", "--format", "json")[1])["Names"] == "fmt1"
    rc, out, _ = sampan("inspect", "-f", '{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}} '
                        '{{json .Config.Cmd}} {{join .Config.Cmd "+"}} {{index .Config.Labels "b"}} '
                        '{{range .Mounts}}{{.Destination}}{{end}} {{if .State.Running}}up{{else}}down{{end}}', "fmt1")
    assert (rc, out) == (0, 'a=1;b=2; ["sh","-c","true"] sh+-c+true 2 /data down\n')
    assert sampan("info", "--format", "{{.Containers}} {{len .Name | printf \"%d\"}}")[1].split()[0] == "1"
    assert sampan("version", "--format", "{{.Client.ApiVersion}}")[1] == "1.45\n"
    sampan("volume", "create", "fmtvol")
    assert "fmtvol:local" in sampan("volume", "ls", "--format", "{{.Name}}:{{.Driver}}")[1].split()
    assert sampan("volume", "inspect", "-f", "{{.Name}}", "fmtvol")[1] == "fmtvol\n"
    assert sampan("volume", "rm", "fmtvol") == (0, "fmtvol\n", "")
    assert sampan("history", "--format", "{{.Size}}", "busybox")[0] == 0


# ------------------------------------------------------------------ help lines
def test_help_lines_are_dockers_style():
    import argparse
    from sampan.cli.main import build_parser

    def walk(parser: argparse.ArgumentParser, path: str):
        for action in parser._actions:
            if action.help and action.help is not argparse.SUPPRESS:
                yield path, action.help
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    yield f"{path} {choice.dest}", choice.help
                for name, sub in action.choices.items():
                    yield from walk(sub, f"{path} {name}")

    helps = list(walk(build_parser(), "sampan"))
    assert len(helps) > 150
    for where, text in helps:
        assert text and text[0].isupper() and not text.endswith("."), (where, text)
