"""The nftables firewall with real traffic, in a network namespace of the test's own (host_ns)
that plays the host and has Docker's iptables FORWARD policy of DROP (as dockerd leaves it):

    outside ns (198.18.0.2) --veth-- host ns (198.18.0.1, sbr0 172.30.0.1/24, sbr1 172.30.1.1/24)
                                       sbr0: c1 172.30.0.2, c2 172.30.0.3    sbr1 (internal): c3 172.30.1.2

Servers are Python sockets made inside each namespace; each answers with its name and the peer
address it saw, so masquerade and hairpin show in the answer.
"""
from __future__ import annotations

import json
import re
import socket
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Iterator

import pytest

from sampan.network import netns
from sampan.network.api import PortMapping
from sampan.network.firewall.firewall import NftFirewall
from sampan.network.firewall.ports import PortAllocated, PortInUse

HOST_ADDR = "198.18.0.1"
OUTSIDE_ADDR = "198.18.0.2"
# what dockerd (28, iptables-nft) makes in the filter table, its FORWARD policy DROP first of all
DOCKER_RULES = """*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-FORWARD - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-FORWARD
-A DOCKER ! -i docker0 -o docker0 -j DROP
-A DOCKER-FORWARD -j DOCKER-ISOLATION-STAGE-1
-A DOCKER-FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A DOCKER-FORWARD -o docker0 -j DOCKER
-A DOCKER-FORWARD -i docker0 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
-A DOCKER-USER -j RETURN
COMMIT
"""


def sh(*argv: str, input: str | None = None) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, input=input).stdout


def ruleset() -> object:
    """`nft -j list ruleset` of this namespace without the counters that traffic moves."""
    text = sh("nft", "-j", "list", "ruleset")
    return json.loads(re.sub(r'\{"counter": \{"packets": \d+, "bytes": \d+\}\}', '{"counter": null}', text))


def rule_count() -> int:
    return sum(1 for item in json.loads(sh("nft", "-j", "list", "ruleset"))["nftables"] if "rule" in item)


@dataclass
class Server:
    """A TCP or UDP server in a namespace answering "<name> <peer address>"."""
    sock: socket.socket
    name: str

    def serve(self) -> None:
        while True:
            try:
                if self.sock.type == socket.SOCK_DGRAM:
                    _, peer = self.sock.recvfrom(100)
                    self.sock.sendto(f"{self.name} {peer[0]}".encode(), peer)
                    continue
                conn, peer = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(f"{self.name} {peer[0]}".encode())


def serve(path: str, name: str, port: int, kind: int = socket.SOCK_STREAM) -> socket.socket:
    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        if kind == socket.SOCK_STREAM:
            s.listen(16)
        return s
    sock = netns.run_in(path, make) if path else make()
    threading.Thread(target=Server(sock, name).serve, daemon=True).start()
    return sock


def ask(addr: str, port: int, path: str | None = None, kind: int = socket.SOCK_STREAM,
        timeout: float = 2.0) -> str:
    """The answer of the server behind addr:port, from namespace ``path`` (default: the host's)."""
    def go() -> str:
        with socket.socket(socket.AF_INET, kind) as s:
            s.settimeout(timeout)
            if kind == socket.SOCK_DGRAM:
                s.sendto(b"?", (addr, port))
                return s.recv(100).decode()
            s.connect((addr, port))
            return s.recv(100).decode()
    return netns.run_in(path, go) if path else go()


def unreachable(addr: str, port: int, path: str, kind: int = socket.SOCK_STREAM) -> bool:
    """True if nothing answers: dropped packets time out (a short wait is enough for a drop
    that is already in place; a reachable server on these links answers in microseconds)."""
    try:
        ask(addr, port, path, kind, timeout=0.5)
    except (TimeoutError, ConnectionRefusedError, OSError):
        return True
    return False


@dataclass
class Lab:
    fw: NftFirewall
    c1: str
    c2: str
    c3: str
    outside: str
    sockets: list[socket.socket]


def _veth_into(bridge: str, host_if: str, path: str, address: str, gateway: str) -> None:
    sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", path)
    sh("ip", "link", "set", host_if, "master", bridge, "up")
    # as dockerd without its userland proxy (and network/bridge.py): with br_netfilter the
    # bridge itself forwards a container's DNAT'd packet to its own published port back out
    # of the port it came in on
    sh("ip", "link", "set", host_if, "type", "bridge_slave", "hairpin", "on")
    sh("nsenter", f"--net={path}", "sh", "-c",
       f"ip addr add {address} dev eth0 && ip link set eth0 up && ip route add default via {gateway}")


@pytest.fixture
def lab(host_ns, tmp_path) -> Iterator[Lab]:
    with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
        f.write("1")
    sh("iptables-restore", input=DOCKER_RULES)
    paths = {name: str(tmp_path / name) for name in ("c1", "c2", "c3", "outside")}
    for path in paths.values():
        netns.create(path)
    sh("ip", "link", "add", "uplink", "type", "veth", "peer", "name", "eth0", "netns", paths["outside"])
    sh("sh", "-c", f"ip addr add {HOST_ADDR}/24 dev uplink && ip link set uplink up")
    sh("nsenter", f"--net={paths['outside']}", "sh", "-c", f"ip addr add {OUTSIDE_ADDR}/24 dev eth0 && ip link set eth0 up")
    for bridge, gateway in (("sbr0", "172.30.0.1/24"), ("sbr1", "172.30.1.1/24")):
        sh("sh", "-c", f"ip link add {bridge} type bridge && ip addr add {gateway} dev {bridge} && ip link set {bridge} up")
    _veth_into("sbr0", "vc1", paths["c1"], "172.30.0.2/24", "172.30.0.1")
    _veth_into("sbr0", "vc2", paths["c2"], "172.30.0.3/24", "172.30.0.1")
    _veth_into("sbr1", "vc3", paths["c3"], "172.30.1.2/24", "172.30.1.1")
    sockets = [serve(paths["c1"], "c1", 80), serve(paths["c2"], "c2", 80), serve(paths["c3"], "c3", 80),
               serve(paths["c1"], "c1-udp", 53, socket.SOCK_DGRAM), serve(paths["outside"], "outside", 9000)]
    fw = NftFirewall()
    try:
        yield Lab(fw, paths["c1"], paths["c2"], paths["c3"], paths["outside"], sockets)
    finally:
        fw.close()
        for s in sockets:
            s.close()
        for path in paths.values():
            netns.remove(path)


def test_published_ports_masquerade_hairpin_with_docker_forward_drop(lab):
    before = ruleset()
    iptables_before = sh("iptables-save", "-t", "filter")
    fw = lab.fw
    # without sampan's rules, Docker's DROP policy stops forwarded traffic
    assert unreachable(OUTSIDE_ADDR, 9000, lab.c1)
    fw.ensure_network("n0", "sbr0", "172.30.0.0/24", False)
    fw.ensure_network("n1", "sbr1", "172.30.1.0/24", True)
    assert open("/proc/sys/net/ipv4/conf/sbr0/route_localnet").read().strip() == "1"
    # one jump of sampan's own at the end of FORWARD, read back by iptables-nft as an iptables rule
    sh("iptables", "-C", "FORWARD", "-m", "comment", "--comment", "sampan", "-j", "SAMPAN-FORWARD")
    assert sh("iptables", "-S", "FORWARD").splitlines()[-1] == "-A FORWARD -m comment --comment sampan -j SAMPAN-FORWARD"

    # masquerade: c1 reaches a host outside its subnet with the host's address
    assert ask(OUTSIDE_ADDR, 9000, lab.c1) == f"outside {HOST_ADDR}"
    # internal: no egress, and isolation between networks both ways
    assert unreachable(OUTSIDE_ADDR, 9000, lab.c3)
    assert unreachable("172.30.0.2", 80, lab.c3)
    assert unreachable("172.30.1.2", 80, lab.c1)
    # a container's address is not reachable from outside unless published
    sh("nsenter", f"--net={lab.outside}", "ip", "route", "add", "172.30.0.0/16", "via", HOST_ADDR)
    assert unreachable("172.30.0.2", 80, lab.outside)

    assert fw.publish("c1", "172.30.0.2", "sbr0", [PortMapping("", 8080, 80),
                                                    PortMapping("", 5353, 53, "udp")]) == [
        PortMapping("", 8080, 80), PortMapping("", 5353, 53, "udp")]
    fw.publish("c2", "172.30.0.3", "sbr0", [PortMapping("", 8081, 80)])
    # DNAT from 127.0.0.1 (masqueraded to the gateway: no loopback source on a bridge) and from the host's address
    assert ask("127.0.0.1", 8080) == "c1 172.30.0.1"
    assert ask(HOST_ADDR, 8080) == f"c1 {HOST_ADDR}"  # a host source address stays as it is
    assert ask("127.0.0.1", 5353, kind=socket.SOCK_DGRAM) == "c1-udp 172.30.0.1"
    # from outside: forwarded through Docker's DROP policy, the client's own address kept
    assert ask(HOST_ADDR, 8080, lab.outside) == f"c1 {OUTSIDE_ADDR}"
    assert ask(HOST_ADDR, 5353, lab.outside, socket.SOCK_DGRAM) == f"c1-udp {OUTSIDE_ADDR}"
    # hairpin: a container reaches its own and a neighbour's published port via the host address
    assert ask(HOST_ADDR, 8080, lab.c1) == "c1 172.30.0.1"
    assert ask(HOST_ADDR, 8081, lab.c1) == "c2 172.30.0.1"
    assert ask("172.30.0.1", 8081, lab.c2) == "c2 172.30.0.1"
    # published ports reach across networks through the host, but not out of an internal one
    assert unreachable(HOST_ADDR, 8080, lab.c3)
    # an internal network publishes nothing (as Docker)
    assert fw.publish("c3", "172.30.1.2", "sbr1", [PortMapping("", 8083, 80)]) == []

    fw.unpublish("c1")
    assert unreachable(HOST_ADDR, 8080, lab.outside)
    fw.unpublish("c2")
    fw.remove_network("n1")
    fw.remove_network("n0")
    assert open("/proc/sys/net/ipv4/conf/sbr0/route_localnet").read().strip() == "0"
    assert ruleset() == before
    assert sh("iptables-save", "-t", "filter") == iptables_before or _same_save(
        sh("iptables-save", "-t", "filter"), iptables_before)
    sh("iptables", "-A", "FORWARD", "-i", "foo", "-j", "ACCEPT")  # dockerd's tool still works on the table


def _same_save(a: str, b: str) -> bool:
    """iptables-save outputs equal but for their timestamp comments and counters."""
    def clean(text: str) -> list[str]:
        return [re.sub(r"\[\d+:\d+\]", "[]", line) for line in text.splitlines() if not line.startswith("#")]
    return clean(a) == clean(b)


def test_port_conflicts_leave_nothing(lab):
    fw = lab.fw
    fw.ensure_network("n0", "sbr0", "172.30.0.0/24", False)
    fw.publish("c1", "172.30.0.2", "sbr0", [PortMapping("", 8080, 80), PortMapping("127.0.0.1", 9090, 80)])
    published = ruleset()
    for ports, message in (
            ([PortMapping("", 8080, 80)], "Bind for 0.0.0.0:8080 failed: port is already allocated"),
            ([PortMapping("127.0.0.1", 8080, 80)], "Bind for 127.0.0.1:8080 failed: port is already allocated"),
            ([PortMapping("", 9000, 80, host_port_end=9100, container_port_end=180)],
             "Bind for 0.0.0.0:9090 failed: port is already allocated"),
            # the first mapping is free, the second is not: neither is published
            ([PortMapping("", 7000, 80), PortMapping("", 8080, 80)],
             "Bind for 0.0.0.0:8080 failed: port is already allocated")):
        with pytest.raises(PortAllocated, match=f"^{re.escape(message)}$"):
            fw.publish("c2", "172.30.0.3", "sbr0", ports)
        assert ruleset() == published
    # another protocol, or another host address than 127.0.0.1, is free
    fw.publish("c2", "172.30.0.3", "sbr0", [PortMapping("", 8080, 80, "udp"), PortMapping(HOST_ADDR, 9090, 80)])
    assert ask(HOST_ADDR, 9090) == f"c2 {HOST_ADDR}" and ask("127.0.0.1", 9090) == "c1 172.30.0.1"
    # something else on the host listening on the port is found, and nothing is published
    with socket.create_server(("0.0.0.0", 8095)):
        before = ruleset()
        with pytest.raises(PortInUse, match=r"^failed to bind host port for 0.0.0.0:8095:172.30.0.3:80/tcp: "
                                           r"address already in use$"):
            fw.publish("c2", "172.30.0.3", "sbr0", [PortMapping("", 8095, 80)])
        assert ruleset() == before
    # a bound UDP socket and an IPv6 listener on [::] (which takes IPv4 too) hold their ports
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.create_server(
            ("::", 8096), family=socket.AF_INET6, dualstack_ipv6=True):
        udp.bind(("127.0.0.1", 5300))
        with pytest.raises(PortInUse, match="for 0.0.0.0:5300:172.30.0.3:53/udp"):
            fw.publish("c2", "172.30.0.3", "sbr0", [PortMapping("", 5290, 43, "udp", 5310, 63)])
        with pytest.raises(PortInUse, match="127.0.0.1:8096:172.30.0.3:80/tcp"):
            fw.publish("c2", "172.30.0.3", "sbr0", [PortMapping("127.0.0.1", 8096, 80)])
        fw.publish("c9", "172.30.0.3", "sbr0", [PortMapping(HOST_ADDR, 5300, 53, "udp")])  # another address
        fw.unpublish("c9")
        assert ruleset() == before
    # a host range for one container port takes the first free one; port 0 an ephemeral one
    picked = fw.publish("c2", "172.30.0.3", "sbr0", [PortMapping("", 8079, 80, host_port_end=8085),
                                                      PortMapping("", 0, 80)])
    assert picked[0] == PortMapping("", 8079, 80)
    low, high = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    assert low <= picked[1].host_port <= high and ask("127.0.0.1", picked[1].host_port) == "c2 172.30.0.1"
    fw.unpublish("c2")
    assert ruleset() == published


def test_restart_reads_the_kernel_and_cleanup_removes_what_is_gone(lab):
    empty = ruleset()
    lab.fw.ensure_network("n0", "sbr0", "172.30.0.0/24", False)
    lab.fw.ensure_network("n1", "sbr1", "172.30.1.0/24", True)
    lab.fw.publish("c1", "172.30.0.2", "sbr0", [PortMapping("", 20000, 20000, host_port_end=20099,
                                                            container_port_end=20099),
                                                PortMapping("", 8080, 80)])
    lab.fw.publish("c2", "172.30.0.3", "sbr0", [PortMapping("", 8081, 80)])
    lab.fw.close()
    lab.fw = fw = NftFirewall()  # a restarted daemon: it knows only what the kernel holds
    assert fw.published("c1") == [PortMapping("", 20000, 20000, "tcp", 20099, 20099), PortMapping("", 8080, 80)]
    with pytest.raises(PortAllocated, match="0.0.0.0:20050"):
        fw.publish("c3", "172.30.1.2", "sbr0", [PortMapping("", 20050, 80)])
    fw.ensure_network("n1", "sbr1", "172.30.1.0/24", True)  # known: changes nothing
    fw.cleanup(["n0"], ["c2"])
    assert fw.published("c1") == [] and ask(HOST_ADDR, 8081, lab.outside) == f"c2 {OUTSIDE_ADDR}"
    assert unreachable(HOST_ADDR, 8080, lab.outside)
    fw.cleanup([], [])
    assert ruleset() == empty


def test_publish_cost_is_elements_not_rules(lab, capsys):
    fw = lab.fw
    fw.ensure_network("n0", "sbr0", "172.30.0.0/24", False)
    rules_before = rule_count()
    one = [PortMapping("", 8080, 80)]
    thousand = [PortMapping("", 20000, 20000, host_port_end=20999, container_port_end=20999)]
    shifted = [PortMapping("", 30000, 80, host_port_end=30999, container_port_end=1079)]
    fw.publish("c1", "172.30.0.2", "sbr0", thousand + shifted)
    assert rule_count() == rules_before  # 2,000 published ports, not one rule more
    assert ask(HOST_ADDR, 30000, lab.outside) == f"c1 {OUTSIDE_ADDR}"  # 30000 -> 80
    fw.unpublish("c1")
    figures = {}
    for label, ports in (("1 port", one), ("1,000 ports", thousand), ("1,000 shifted ports", shifted)):
        publish, unpublish = [], []
        for _ in range(15):
            start = time.perf_counter()
            fw.publish("c1", "172.30.0.2", "sbr0", ports)
            publish.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            fw.unpublish("c1")
            unpublish.append((time.perf_counter() - start) * 1000)
        figures[label] = (statistics.median(publish), statistics.median(unpublish))
    with capsys.disabled():
        print("\nfirewall medians, publish/unpublish ms: "
              + ", ".join(f"{label} {p:.2f}/{u:.2f}" for label, (p, u) in figures.items()))
    fw.remove_network("n0")
