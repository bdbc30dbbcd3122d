"""The manager with the real firewall (network/firewall/), in a namespace of the test's own:
a published port answers through the host's addresses, a host port of 0 is resolved and
recorded, a taken port undoes the whole endpoint, and teardown leaves the ruleset as it was."""
from __future__ import annotations

import socket
import subprocess
import threading
from typing import Iterator

import pytest

from sampan.errors import Conflict
from sampan.network import netns
from sampan.network.api import PortMapping
from sampan.network.firewall.firewall import NftFirewall
from sampan.network.ipam import Ipam
from sampan.network.manager import Manager

from conftest import ip, link_gone, net_state

A, B = "a" * 64, "b" * 64


def ruleset() -> str:
    return subprocess.run(["nft", "list", "ruleset"], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def firewalled(host_ns, tmp_path) -> Iterator[Manager]:
    firewall = NftFirewall()
    m = Manager(Ipam.open(str(tmp_path / "root")), str(tmp_path / "exec"), firewall)
    yield m
    m.close()
    m.ipam.close()
    firewall.close()


def _answer(addr: str, port: int) -> bytes:
    with socket.create_connection((addr, port), timeout=5) as s:
        return s.recv(64)


def _serve(path: str) -> socket.socket:
    """A server on port 80 in the container that says who called."""
    return netns.run_in(path, lambda: socket.create_server(("0.0.0.0", 80)))


def _reply(server: socket.socket) -> None:
    conn, peer = server.accept()
    with conn:
        conn.sendall(b"hello " + peer[0].encode())


def test_published_port_answers_and_teardown_restores_the_ruleset(firewalled):
    ip("link", "add", "uplink", "type", "bridge")
    ip("addr", "add", "192.0.2.10/24", "dev", "uplink")
    ip("link", "set", "uplink", "up")
    before_rules, before_links = ruleset(), net_state()
    firewalled.create_network("web", subnet="10.70.0.0/24")
    a = firewalled.create_sandbox(A)
    ep = firewalled.connect(A, a, "web", ports=[PortMapping("", 8080, 80), PortMapping("", 0, 80)])
    assert ep.ports[0] == PortMapping("", 8080, 80) and ep.ports[1].host_port > 0
    assert firewalled.endpoints(A)[0].ports == ep.ports  # recorded as resolved
    with _serve(a) as server:
        for addr, port in (("127.0.0.1", 8080), ("192.0.2.10", 8080), ("192.0.2.10", ep.ports[1].host_port)):
            t = threading.Thread(target=_reply, args=(server,))
            t.start()
            assert _answer(addr, port).startswith(b"hello ")
            t.join()
    # a second container asking for the same host port: Docker's error, nothing of it left
    b = firewalled.create_sandbox(B)
    state = net_state(), net_state(b), ruleset()
    with pytest.raises(Conflict, match="port is already allocated"):
        firewalled.connect(B, b, "web", ports=[PortMapping("", 8080, 80)])
    assert (net_state(), net_state(b), ruleset()) == state and firewalled.endpoints(B) == []
    firewalled.remove_sandbox(B)
    firewalled.remove_sandbox(A)
    firewalled.remove_network("web")
    assert ruleset() == before_rules
    assert link_gone(ep.host_ifname) and net_state() == before_links
    ip("link", "del", "uplink")
