"""sampan's networking with a real dockerd up in the same network namespace: dockerd's
default networking (docker0, its iptables rules, FORWARD policy DROP) and sampand's bridge
side by side. A namespace beyond that "host" (a veth pair to an outside namespace) reaches a
port sampan publishes, and a sampan container reaches it out, through Docker's DROP policy;
docker's own container keeps working; tearing sampan's side down leaves dockerd's rules as
they were."""
from __future__ import annotations

import os
import subprocess
import time
import urllib.request

import pytest

import outside_netns
from private_daemons import DOCKER_CLI, DOCKERD, Dockerd, Sampand, busybox_rootfs, in_netns
from sampan.network import netns

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (DOCKERD and DOCKER_CLI), reason="no dockerd")]


def _in(path: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([*in_netns(path), *argv], capture_output=True, text=True, timeout=60)


@pytest.fixture
def both(tmp_path):
    d = Dockerd(busybox_rootfs(), bridge="10.254.252.1/24")
    s = None
    try:
        # forwarding off, as on a fresh host: dockerd turns it on and sets FORWARD's policy to DROP
        assert _in(d.netns, "sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward").returncode == 0
        d.start()
        s = Sampand(network=d.netns)
        s.start()
        archive = os.path.join(d.tmp, "busybox.tar")
        d.docker("save", "-o", archive, d.image)
        s.sampan("load", "-q", "-i", archive, check=True)
        yield d, s
    finally:
        problems = []
        for daemon in (s, d):
            if daemon is not None:
                problems += daemon.teardown()
        assert not problems, problems


@pytest.fixture
def outside(both, tmp_path):
    """A namespace beyond the daemons' (tests/outside_netns.py): 203.0.113.1 - 203.0.113.2."""
    d, _ = both
    with outside_netns.outside(d.netns, str(tmp_path / "outside-netns")) as path:
        yield path


def _fetch(path: str, url: str, timeout: float = 10) -> str:
    """The body at ``url``, fetched from the network namespace at ``path`` (retried while the
    server comes up)."""
    def get() -> str:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.read().decode()
    deadline = time.monotonic() + timeout
    while True:
        try:
            return netns.run_in(path, get)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_published_ports_and_egress_through_dockers_drop_policy(both, outside):
    d, s = both
    rules = _in(d.netns, "iptables", "-S", "FORWARD").stdout
    assert "-P FORWARD DROP" in rules and "DOCKER" in rules, rules   # dockerd's, as it leaves them
    docker_rules = _in(d.netns, "iptables-save", "-t", "filter").stdout
    # a sampan container publishes a port: reached from outside (forwarded into sampan0)
    web = s.sampan("run", "-d", "-p", "18300:80", "busybox:local", "sh", "-c",
                   "mkdir /www && echo from-sampan > /www/index.html && exec httpd -f -p 80 -h /www",
                   check=True).stdout.decode().strip()
    assert _fetch(outside, "http://203.0.113.1:18300/") == "from-sampan\n"
    # and a sampan container reaches out (forwarded out of sampan0, masqueraded)
    out = s.sampan("run", "--rm", "busybox:local", "wget", "-qO-", "http://203.0.113.2:8000/", check=True)
    assert out.stdout.decode() == "203.0.113.1"
    # docker's own container still reaches out too
    out = d.docker("run", "--rm", d.image, "wget", "-qO-", "http://203.0.113.2:8000/", check=True)
    assert out.stdout == "203.0.113.1"
    s.sampan("rm", "-f", web, check=True)
    # sampan's one jump in FORWARD aside, dockerd's rules are as dockerd made them
    after = _in(d.netns, "iptables-save", "-t", "filter").stdout
    strip = lambda text: [line for line in text.splitlines() if not line.startswith(("#", ":")) and "sampan" not in line]  # noqa: E731
    assert strip(after) == strip(docker_rules)
