"""A private dockerd or containerd leaves the host's links, addresses and firewall alone:
dockerd started with --bridge=none deletes a docker0 bridge it finds in its network
namespace, which took the host's docker0 away before each daemon got a netns of its own."""

import os
import subprocess
from pathlib import Path

import pytest

ADDRESS = "198.51.100.1/32"


def _addresses(link):
    cp = subprocess.run(["ip", "-o", "addr", "show", "dev", link], capture_output=True, text=True, check=True)
    return {line.split()[3] for line in cp.stdout.splitlines()}


@pytest.fixture
def docker0():
    """The host's docker0, or a bridge of that name made for the test, with an address on it."""
    made = not Path("/sys/class/net/docker0").exists()
    if made:
        subprocess.run(["ip", "link", "add", "docker0", "type", "bridge"], check=True)
    had_address = ADDRESS in _addresses("docker0")
    if not had_address:
        subprocess.run(["ip", "addr", "add", ADDRESS, "dev", "docker0"], check=True)
    yield "docker0"
    if made:
        subprocess.run(["ip", "link", "del", "docker0"], check=False)
    elif not had_address:
        subprocess.run(["ip", "addr", "del", ADDRESS, "dev", "docker0"], check=False)


def _start_and_stop(daemon):
    try:
        daemon.start()
    finally:
        problems = daemon.teardown()
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("kind", ["dockerd", "containerd"])
def test_docker0_and_host_network_survive_a_private_daemon(kind, docker0, new_private_daemon):
    daemon = new_private_daemon(kind)
    links, addresses = set(os.listdir("/sys/class/net")), _addresses(docker0)
    _start_and_stop(daemon)  # the teardown compares the firewall, sysctls and links too
    assert Path(f"/sys/class/net/{docker0}").exists(), f"{kind} deleted the host's {docker0}"
    assert _addresses(docker0) == addresses
    assert links <= set(os.listdir("/sys/class/net"))
