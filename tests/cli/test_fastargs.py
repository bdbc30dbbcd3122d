"""`sampan run`/`create` command lines read without argparse (cli/fastargs.py) give what
argparse gives, and anything else is left to argparse."""
import subprocess
import sys
from pathlib import Path

import pytest

from sampan.cli import main as cli_main

SRC = Path(__file__).resolve().parents[2] / "src"

SAME = [
    ["run", "--rm", "busybox", "true"],
    ["run", "--rm", "--network", "none", "busybox:local", "true"],
    ["run", "-it", "--name=x", "-e", "A=1", "-eB=2", "-e=C=3", "--env", "D", "-v", "/a:/b", "busybox", "sh", "-c",
     "echo hi"],
    ["run", "-dit", "busybox"],
    ["run", "-d", "--memory", "512m", "--memory-swap", "-1", "--cpus", "0.5", "-c", "512", "--pids-limit", "10",
     "busybox", "sleep", "1"],
    ["run", "--stop-timeout", "-1", "--restart=on-failure:3", "--init", "--read-only", "busybox"],
    ["--root", "/r", "--exec-root=/e", "-H", "unix:///x", "run", "busybox", "--rm", "ls", "-la"],
    ["run", "-u", "1000:1000", "-w", "/tmp", "-h", "myhost", "--entrypoint", "", "busybox"],
    ["create", "--name", "c1", "--label", "a=b", "-l", "c=d", "--cap-add", "NET_ADMIN", "--cap-drop=ALL",
     "busybox", "true"],
    ["run", "--net", "host", "--tmpfs", "/t", "--mount", "type=tmpfs,target=/x", "--ulimit", "nofile=10:20",
     "busybox"],
    ["run", "--log-opt", "max-size=1m", "--sysctl", "net.ipv4.ip_forward=1", "--shm-size", "64m",
     "--security-opt", "no-new-privileges", "--privileged", "--device", "/dev/null", "busybox", "-"],
    ["create", "--env-file", "/dev/null", "--hostname=h", "--pull", "never", "--platform", "linux/amd64", "busybox"],
]

LEFT_TO_ARGPARSE = [
    ["run", "--help"], ["run", "--priv", "busybox"], ["run", "--pids-limit", "x", "busybox"], ["run"],
    ["run", "--name"], ["run", "--rm=1", "busybox"], ["run", "-x", "busybox"], ["run", "--", "busybox"],
    ["run", "--name", "-x", "busybox"], ["run", "-t=1", "busybox"], ["--debug", "run", "busybox"],
]


def _argparse(argv):
    return {k: v for k, v in vars(cli_main.build_parser(cli_main.command_of(argv)).parse_args(argv)).items()
            if k != "func"}


@pytest.mark.parametrize("argv", SAME, ids=lambda a: " ".join(a)[:60])
def test_same_as_argparse(argv):
    fast = cli_main._fast_args(argv, cli_main.command_of(argv))
    assert fast is not None, "left to argparse"
    assert {k: v for k, v in vars(fast).items() if k != "func"} == _argparse(argv)
    assert fast.func is not None


@pytest.mark.parametrize("argv", LEFT_TO_ARGPARSE, ids=lambda a: " ".join(a)[:60])
def test_the_rest_is_left_to_argparse(argv):
    assert cli_main._fast_args(argv, cli_main.command_of(argv)) is None


def test_run_imports_neither_argparse_nor_re():
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from sampan.cli import main\n"
            "a = ['run', '--rm', '-e', 'A=1', 'busybox', 'true']\n"
            "ns = main._fast_args(a, main.command_of(a))\n"
            "from sampan.cli import createflags; createflags.create_body(ns)\n"
            "print(sorted({'argparse', 're', 'json', 'typing', 'http.client', 'threading', 'rich'} & set(sys.modules)))"
            % str(SRC))
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
