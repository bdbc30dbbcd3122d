"""IPv6 networks (--ipv6) on the real kernel, in a namespace of the test's own (conftest.host_ns):
endpoints that talk over IPv6, the ULA subnet choice, fixed IPv6 addresses, a failure mid-connect
leaving nothing, the time per endpoint; then, with the real firewall (``table ip6 sampan``),
published ports on the host's IPv6 address, masquerade and no egress from an internal network
(with ip6tables' FORWARD policy of DROP, as dockerd leaves it), and restore after a reboot."""
from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import statistics
import subprocess
import threading
import time
from typing import Iterator

import pytest

from sampan.network import netns
from sampan.network.api import AddressInUse, InvalidNetworkConfig, NetworkError, PortMapping
from sampan.network.firewall.firewall import NftFirewall
from sampan.network.ipam import Ipam
from sampan.network.manager import Manager

from conftest import ip, link_gone, net_state, sandboxes

A, B, C = "a" * 64, "b" * 64, "c" * 64
HOST6, OUTSIDE6 = "2001:db8:1::1", "2001:db8:1::2"
# dockerd 28 with ip6tables: the filter table's FORWARD policy DROP
DOCKER_RULES6 = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n" \
                ":DOCKER-USER - [0:0]\n-A FORWARD -j DOCKER-USER\n-A DOCKER-USER -j RETURN\nCOMMIT\n"


def sh(*argv: str, input: str | None = None) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, input=input).stdout


def sysctl(path: str, netns_path: str | None = None) -> str:
    read = lambda: open(f"/proc/sys/net/{path}").read().strip()  # noqa: E731 - read in that namespace
    return netns.run_in(netns_path, read) if netns_path else read()


class serve6:
    """A dual-stack TCP server in namespace ``path`` answering "<peer address>" to each client,
    until closed (shut down first: a close alone does not wake the thread blocked in accept,
    and that socket would keep the namespace, and its veth, alive)."""

    def __init__(self, path: str, port: int) -> None:
        self.sock = netns.run_in(path, lambda: socket.create_server(("::", port), family=socket.AF_INET6,
                                                                    dualstack_ipv6=True))
        self.thread = threading.Thread(target=self._answer, daemon=True)
        self.thread.start()

    def _answer(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            addr = ipaddress.IPv6Address(peer[0])
            with conn:
                conn.sendall(str(addr.ipv4_mapped or addr).encode())

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.thread.join()
        self.sock.close()

    def __enter__(self) -> "serve6":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ask(addr: str, port: int, path: str | None = None, timeout: float = 2.0) -> str:
    """What the server behind addr:port answers, from namespace ``path`` (default: the host's)."""
    def go() -> str:
        with socket.create_connection((addr, port), timeout=timeout) as s:
            return s.recv(100).decode()
    return netns.run_in(path, go) if path else go()


def unreachable(addr: str, port: int, path: str | None = None) -> bool:
    """Nothing answers (a drop already in place times out; a reachable server here answers in µs)."""
    try:
        ask(addr, port, path, timeout=0.5)
    except OSError:
        return True
    return False


def test_endpoints_on_an_ipv6_network_talk_over_ipv6(manager):
    # the host routes part of the ULA space: the picked subnet stays clear of it
    ip("link", "add", "uplink", "type", "bridge")
    ip("link", "set", "uplink", "up")
    ip("-6", "route", "add", "fd00::/9", "dev", "uplink")
    before = net_state(ipv6=True)
    net = manager.create_network("six", subnet="10.80.0.0/24", enable_ipv6=True)
    subnet6 = ipaddress.IPv6Network(net.subnet6)
    assert subnet6.prefixlen == 64 and subnet6.subnet_of(ipaddress.IPv6Network("fd80::/9"))
    assert net.enable_ipv6 and net.gateway6 == str(subnet6.network_address + 1)
    assert manager.get("six") == net  # the record keeps them
    assert f"{net.gateway6}/64" in ip("-6", "-br", "addr", "show", net.bridge)
    assert sysctl("ipv6/conf/all/forwarding") == "1"
    a, b = manager.create_sandbox(A), manager.create_sandbox(B)
    ea, eb = manager.connect(A, a, "six"), manager.connect(B, b, "six")
    assert (ea.ip, ea.ip6, eb.ip6, ea.prefixlen6, ea.gateway6) == (
        "10.80.0.2", str(subnet6.network_address + 2), str(subnet6.network_address + 3), 64, net.gateway6)
    assert manager.endpoints(A) == [ea]
    inside = ip("-6", "addr", "show", "eth0", netns_path=a)
    assert f"inet6 {ea.ip6}/64 scope global nodad" in inside and "tentative" not in inside
    assert sysctl("ipv6/conf/eth0/accept_dad", a) == "0"
    assert f"default via {net.gateway6} dev eth0" in ip("-6", "route", netns_path=a)
    assert f"default via {net.gateway} dev eth0" in ip("-4", "route", netns_path=a)
    with serve6(b, 80):
        assert ask(eb.ip6, 80, a) == ea.ip6   # container to container over IPv6
        assert ask(eb.ip, 80, a) == ea.ip     # and IPv4 still
        assert ask(eb.ip6, 80) == net.gateway6  # the host through the bridge
    ping = subprocess.run(["nsenter", f"--net={a}", "busybox", "ping", "-6", "-c", "1", "-W", "2", eb.ip6],
                          capture_output=True, text=True)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    # a fixed IPv6 address; one taken, outside the subnet, or on an IPv4 network is refused, leaving nothing
    c = manager.create_sandbox(C)
    fixed = str(subnet6.network_address + 0x99)
    ec = manager.connect(C, c, "six", ip6=fixed)
    assert ec.ip6 == fixed
    manager.create_network("four", subnet="10.81.0.0/24")
    state = net_state(ipv6=True), net_state(c, ipv6=True)
    for ip6, network, error in ((fixed, "six", AddressInUse), (net.gateway6, "six", AddressInUse),
                                ("fd00::5", "six", InvalidNetworkConfig), ("10.80.0.9", "six", InvalidNetworkConfig),
                                ("fd00::5", "four", InvalidNetworkConfig)):
        with pytest.raises(error):
            manager.connect("d" * 64, c, network, ip6=ip6)
        assert (net_state(ipv6=True), net_state(c, ipv6=True)) == state and manager.endpoints("d" * 64) == []
    # an IPv4 network's interface keeps IPv6 off
    e4 = manager.connect(C, c, "four")
    assert e4.ip6 == "" and sysctl("ipv6/conf/eth1/disable_ipv6", c) == "1"
    for cid in (A, B, C):
        manager.remove_sandbox(cid)
    assert all(link_gone(e.host_ifname) for e in (ea, eb, ec, e4))
    manager.remove_network("six")
    manager.remove_network("four")
    assert net_state(ipv6=True) == before and sandboxes(manager) == []
    ip("link", "del", "uplink")


def test_ipv6_network_config_is_checked(manager):
    before = net_state(ipv6=True)
    for kwargs, message in (({"subnet6": "fd00:1::/64"}, "needs IPv6 enabled"),
                            ({"enable_ipv6": True, "subnet6": "10.1.0.0/16"}, "not an IPv6 subnet"),
                            ({"enable_ipv6": True, "subnet6": "fd00:1::1/64"}, "it should be fd00:1::/64"),
                            ({"enable_ipv6": True, "subnet6": "fd00:1::/127"}, "no room"),
                            ({"enable_ipv6": True, "subnet6": "fd00:1::/64", "gateway6": "fd00:2::1"},
                             "not a host address")):
        with pytest.raises(InvalidNetworkConfig, match=message):
            manager.create_network("bad", subnet="10.82.0.0/24", **kwargs)
    net = manager.create_network("given", subnet="10.82.0.0/24", enable_ipv6=True, subnet6="fd00:1::/64",
                                 gateway6="fd00:1:0:0::fe")
    assert (net.subnet6, net.gateway6) == ("fd00:1::/64", "fd00:1::fe")
    with pytest.raises(AddressInUse, match="Pool overlaps"):
        manager.create_network("other", subnet="10.83.0.0/24", enable_ipv6=True, subnet6="fd00:1::/80")
    manager.remove_network("given")
    assert net_state(ipv6=True) == before and manager.networks() == []


def test_a_failure_mid_connect_on_an_ipv6_network_leaves_nothing(manager):
    net = manager.create_network("fail6", subnet="10.84.0.0/24", enable_ipv6=True, subnet6="fd00:84::/64")
    a = manager.create_sandbox(A)
    # the last step fails inside the container: an IPv6 default route is already there
    ip("link", "add", "blocker0", "type", "bridge", netns_path=a)
    ip("link", "set", "blocker0", "up", netns_path=a)
    ip("-6", "route", "add", "default", "dev", "blocker0", netns_path=a)
    before = net_state(ipv6=True), net_state(a, ipv6=True)
    with pytest.raises(NetworkError, match=f"add default route via {net.gateway6}"):
        manager.connect(A, a, "fail6")
    assert (net_state(ipv6=True), net_state(a, ipv6=True)) == before and manager.endpoints(A) == []
    assert manager.ipam.conn.execute("SELECT COUNT(*) FROM network_addresses6").fetchone()[0] == 0
    ip("-6", "route", "del", "default", netns_path=a)
    # released: the next address in turn, and the database refuses a second holder of it
    ep = manager.connect(A, a, "fail6")
    assert ep.ip6 == "fd00:84::3"
    with pytest.raises(Exception, match="UNIQUE constraint failed"):
        manager.ipam.conn.execute("INSERT INTO network_addresses6 VALUES (?, ?, ?)", (net.id, ep.ip6, B))
    manager.remove_sandbox(A)
    assert manager.ipam.conn.execute("SELECT COUNT(*) FROM network_addresses6").fetchone()[0] == 0
    manager.remove_network("fail6")


def test_connect_time_on_an_ipv6_network(manager, capsys):
    manager.create_network("fast6", subnet="10.85.0.0/24", enable_ipv6=True)
    manager.create_network("fast4", subnet="10.86.0.0/24")
    figures = {}
    for network in ("fast4", "fast6"):
        connected, removed = [], []
        for _ in range(30):
            a = manager.create_sandbox(A)
            t0 = time.perf_counter()
            manager.connect(A, a, network)
            t1 = time.perf_counter()
            manager.remove_sandbox(A)
            connected.append(t1 - t0)
            removed.append(time.perf_counter() - t1)
        figures[network] = (statistics.median(connected) * 1000, statistics.median(removed) * 1000)
    with capsys.disabled():
        print("\nconnect / remove sandbox, median ms: "
              + ", ".join(f"{n} {c:.1f}/{r:.1f}" for n, (c, r) in figures.items()))
    manager.remove_network("fast6")
    manager.remove_network("fast4")


# ---------------------------------------------------------------- with the real firewall

def ruleset() -> object:
    """`nft -j list ruleset` of this namespace without the counters that traffic moves."""
    text = sh("nft", "-j", "list", "ruleset")
    return json.loads(re.sub(r'\{"counter": \{"packets": \d+, "bytes": \d+\}\}', '{"counter": null}', text))


@pytest.fixture
def uplinked(host_ns, tmp_path) -> Iterator[tuple[Manager, str]]:
    """The manager with NftFirewall, the host namespace with ip6tables' FORWARD DROP and an
    uplink to an "outside" namespace (host 2001:db8:1::1, outside 2001:db8:1::2)."""
    sh("ip6tables-restore", input=DOCKER_RULES6)
    outside = str(tmp_path / "outside")
    netns.create(outside)
    sh("ip", "link", "add", "uplink", "type", "veth", "peer", "name", "eth0", "netns", outside)
    for argv, path in ((["uplink", HOST6], None), (["eth0", OUTSIDE6], outside)):
        prefix = ["nsenter", f"--net={path}"] if path else []
        sh(*prefix, "sh", "-c", f"echo 0 > /proc/sys/net/ipv6/conf/{argv[0]}/accept_dad && "
           f"ip addr add {argv[1]}/64 dev {argv[0]} nodad && ip link set {argv[0]} up")
    firewall = NftFirewall()
    m = Manager(Ipam.open(str(tmp_path / "root")), str(tmp_path / "exec"), firewall)
    try:
        yield m, outside
    finally:
        m.close()
        m.ipam.close()
        firewall.close()
        # a failed test's sandboxes (the links in them go with host_ns), and the outside
        for path in [*(os.path.join(m.netns_dir, name) for name in sandboxes(m)), outside]:
            netns.remove(path)


def test_published_ports_egress_and_internal_over_ipv6(uplinked):
    m, outside = uplinked
    before, ip6tables_before = ruleset(), sh("ip6tables", "-S")
    net = m.create_network("pub6", subnet="10.87.0.0/24", enable_ipv6=True, subnet6="fd00:87::/64")
    m.create_network("inner6", subnet="10.88.0.0/24", enable_ipv6=True, subnet6="fd00:88::/64", internal=True)
    # one jump of sampan's own at the end of ip6tables' FORWARD, read back as an ip6tables rule
    assert sh("ip6tables", "-S", "FORWARD").splitlines()[-1] == \
        "-A FORWARD -m comment --comment sampan -j SAMPAN-FORWARD"
    a, b, c = m.create_sandbox(A), m.create_sandbox(B), m.create_sandbox(C)
    ea = m.connect(A, a, "pub6", ports=[PortMapping("", 8080, 80), PortMapping("", 0, 80)])
    picked = ea.ports[2].host_port
    assert ea.ports == (PortMapping("", 8080, 80), PortMapping("::", 8080, 80),
                        PortMapping("", picked, 80), PortMapping("::", picked, 80))
    eb = m.connect(B, b, "pub6", ports=[PortMapping("::", 8081, 80)])  # IPv6 only
    assert eb.ports == (PortMapping("::", 8081, 80),)
    ec = m.connect(C, c, "inner6")
    servers = [serve6(path, 80) for path in (a, b, c)]
    outside_server = serve6(outside, 9000)
    try:
        # the host's IPv6 address, from the host and from outside (the client's address kept)
        assert ask(HOST6, 8080) == HOST6
        assert ask(HOST6, 8080, outside) == OUTSIDE6
        assert ask(HOST6, picked, outside) == OUTSIDE6
        assert ask("127.0.0.1", 8080) == net.gateway  # IPv4 as before
        assert ask(HOST6, 8081, outside) == OUTSIDE6
        assert unreachable("127.0.0.1", 8081)  # published on IPv6 only
        # ::1 is not DNAT'd out of the host (no route_localnet in IPv6), as dockerd without its proxy
        assert unreachable("::1", 8080)
        # hairpin over IPv6: a container reaches its own and a neighbour's port through the host
        assert ask(HOST6, 8080, a) == net.gateway6
        assert ask(HOST6, 8081, a) == net.gateway6
        # egress through masquerade: the outside sees the host's address
        sh("nsenter", f"--net={outside}", "ip", "-6", "route", "add", "fd00::/8", "via", HOST6)
        assert ask(OUTSIDE6, 9000, a) == HOST6
        # a container's address is not reachable from outside unless published
        assert unreachable(ea.ip6, 80, outside)
        # internal: no egress, no way to the other network (isolation both ways), nothing published
        assert unreachable(OUTSIDE6, 9000, c)
        assert unreachable(ea.ip6, 80, c) and unreachable(ec.ip6, 80, a)
        assert m.firewall.publish(C, ec.ip, m.get("inner6").bridge, [PortMapping("", 8083, 80)],
                                  container_ip6=ec.ip6) == []
        # a port taken on IPv6: Docker's message, nothing of the endpoint left
        d = m.create_sandbox("d" * 64)
        state = net_state(ipv6=True), ruleset()
        with pytest.raises(Exception, match=r"^Bind for :::8081 failed: port is already allocated$"):
            m.connect("d" * 64, d, "pub6", ports=[PortMapping("", 8081, 80)])
        with socket.create_server(("::", 8190), family=socket.AF_INET6):  # an IPv6-only listener
            for ports in ([PortMapping("", 8190, 80)],  # one port: a bind tried; a range: /proc read
                          [PortMapping("::", 8150, 8150, host_port_end=8249, container_port_end=8249)]):
                with pytest.raises(Exception, match=r"^failed to bind host port for :::8190:fd00:87::[0-9a-f]+:"
                                                    r"(80|8190)/tcp: address already in use$"):
                    m.connect("d" * 64, d, "pub6", ports=ports)
        assert (net_state(ipv6=True), ruleset()) == state and m.endpoints("d" * 64) == []
        # an IPv4-only listener holds no IPv6 port
        with socket.create_server(("0.0.0.0", 8070)):
            assert m.connect("d" * 64, d, "pub6", ports=[PortMapping("::", 8070, 80)]).ports == (
                PortMapping("::", 8070, 80),)
        m.remove_sandbox("d" * 64)
    finally:
        for s in [*servers, outside_server]:
            s.close()
    for cid in (A, B, C):
        m.remove_sandbox(cid)
    m.remove_network("pub6")
    m.remove_network("inner6")
    assert ruleset() == before and sh("ip6tables", "-S") == ip6tables_before


def test_restore_remakes_the_ipv6_bridge_and_rules(uplinked, tmp_path):
    m, outside = uplinked
    before = ruleset()
    net = m.create_network("keep6", subnet="10.89.0.0/24", enable_ipv6=True, subnet6="fd00:89::/64")
    a, b = m.create_sandbox(A), m.create_sandbox(B)
    m.connect(A, a, "keep6", ports=[PortMapping("", 8080, 80)])
    m.connect(B, b, "keep6", ports=[PortMapping("", 8081, 80)])
    # B's daemon died (B is gone), then a "reboot" removed the bridge and sampan's tables
    sh("ip", "link", "del", net.bridge)
    sh("nft", "delete", "table", "ip", "sampan")
    sh("nft", "delete", "table", "ip6", "sampan")
    firewall = NftFirewall()
    restarted = Manager(Ipam.open(str(tmp_path / "root")), str(tmp_path / "exec"), firewall)
    restarted.restore(live_containers=[A])
    assert f"{net.gateway6}/64" in ip("-6", "-br", "addr", "show", net.bridge)
    table6 = sh("nft", "list", "table", "ip6", "sampan")
    assert f'"{net.bridge}" comment "keep6"' in table6 and 'fd00:89::/64 comment "keep6"' in table6
    # A is live: the engine connects it again (its veth went with the bridge); B's ports are not back
    restarted.disconnect(A, "keep6")
    restarted.connect(A, a, "keep6", ports=[PortMapping("", 8080, 80)])
    with serve6(a, 80):
        assert ask(HOST6, 8080, outside) == OUTSIDE6
    assert "8081" not in sh("nft", "list", "table", "ip6", "sampan")
    assert [e.container_id for e in restarted.ipam.endpoints()] == [A]
    # a restart (no reboot) with A gone too: cleanup drops its IPv6 port, the network's rules stay
    firewall2 = NftFirewall()
    again = Manager(Ipam.open(str(tmp_path / "root")), str(tmp_path / "exec"), firewall2)
    again.restore(live_containers=[])
    table6 = sh("nft", "list", "table", "ip6", "sampan")
    assert "8080" not in table6 and 'fd00:89::/64 comment "keep6"' in table6
    again.remove_network("keep6")
    assert ruleset() == before
    for mgr, fw in ((restarted, firewall), (again, firewall2)):
        mgr.close()
        mgr.ipam.close()
        fw.close()
