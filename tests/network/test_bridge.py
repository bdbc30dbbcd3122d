"""The bridge driver and the manager on the real kernel, in a namespace of the test's own
(conftest.host_ns): endpoints that talk, internal networks, fixed addresses, failures at each
step leaving nothing behind, restore after a crash or a reboot, and the time per endpoint."""
from __future__ import annotations

import socket
import statistics
import subprocess
import threading
import time

import pytest

from sampan.errors import Conflict
from sampan.network import netns
from sampan.network.api import AddressInUse, Endpoint, InvalidNetworkConfig, NetworkError, NoFirewall, PortMapping
from sampan.network.ipam import Ipam
from sampan.network.manager import BRIDGE_NAME_OPTION, MTU_OPTION, Manager, host_ifname

from conftest import ip, link_gone, net_state, sandboxes

A, B, C = "a" * 64, "b" * 64, "c" * 64


def _tcp_roundtrip(server_ns: str, server_ip: str, client_ns: str) -> bytes:
    server = netns.run_in(server_ns, lambda: socket.create_server((server_ip, 0)))
    with server:
        port = server.getsockname()[1]
        client = netns.run_in(client_ns, lambda: socket.create_connection((server_ip, port), timeout=5))
        with client:
            conn, peer = server.accept()
            with conn:
                client.sendall(b"ping")
                conn.sendall(conn.recv(4) + b" from " + peer[0].encode())
                return client.recv(64)


def test_two_endpoints_on_one_bridge_talk(manager):
    net = manager.create_network("talk", subnet="10.60.0.0/24")
    a, b = manager.create_sandbox(A), manager.create_sandbox(B)
    ea = manager.connect(A, a, "talk")
    eb = manager.connect(B, b, "talk")
    assert (ea.ip, eb.ip, ea.gateway, ea.prefixlen, ea.ifname) == ("10.60.0.2", "10.60.0.3", "10.60.0.1", 24, "eth0")
    assert ea.mac == "02:42:0a:3c:00:02"
    inside = ip("addr", "show", "eth0", netns_path=a)
    assert "inet 10.60.0.2/24" in inside and "link/ether 02:42:0a:3c:00:02" in inside
    assert "inet6" not in inside  # IPv6 off on an IPv4 network's interface, as Docker
    assert "default via 10.60.0.1 dev eth0" in ip("route", netns_path=a)
    assert f"master {net.bridge}" in ip("link", "show", ea.host_ifname)
    assert _tcp_roundtrip(b, eb.ip, a) == b"ping from 10.60.0.2"
    ping = subprocess.run(["nsenter", f"--net={a}", "busybox", "ping", "-c", "1", "-W", "2", eb.ip],
                          capture_output=True, text=True)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    # the gateway (the host) reaches the containers too
    assert _tcp_roundtrip(a, ea.ip, manager_host_ns(manager)) == b"ping from 10.60.0.1"
    manager.disconnect(A, "talk")
    manager.disconnect(B, "talk")
    with pytest.raises(Exception, match="not connected"):
        manager.disconnect(B, "talk")
    assert ea.host_ifname not in ip("-br", "link")
    manager.remove_sandbox(A)
    manager.remove_sandbox(B)
    manager.remove_network("talk")
    assert net.bridge not in ip("-br", "link") and sandboxes(manager) == []


def manager_host_ns(manager: Manager) -> str:
    """The namespace the manager works in (the test's host): /proc/thread-self of this thread."""
    return "/proc/thread-self/ns/net"


def test_internal_network_fixed_ip_and_mac(manager):
    with pytest.raises(InvalidNetworkConfig, match="MTU"):
        manager.create_network("inner", options={MTU_OPTION: "9"})
    manager.create_network("inner", subnet="10.61.0.0/16", gateway="10.61.255.254", ip_range="10.61.7.0/24",
                           internal=True, options={MTU_OPTION: "1400"})
    a = manager.create_sandbox(A)
    ep = manager.connect(A, a, "inner", ip="10.61.0.10", mac="02:00:00:00:00:aa", aliases=["web"])
    assert (ep.ip, ep.mac, ep.gateway, ep.aliases) == ("10.61.0.10", "02:00:00:00:00:aa", "10.61.255.254", ("web",))
    assert "default" not in ip("route", netns_path=a)  # internal: no way out
    assert "mtu 1400" in ip("link", "show", "eth0", netns_path=a) and "mtu 1400" in ip("link", "show", ep.host_ifname)
    assert "10.61.255.254/16" in ip("-br", "addr")     # the bridge still has the gateway address
    b = manager.create_sandbox(B)
    assert manager.connect(B, b, "inner").ip == "10.61.7.0"  # the range's first address
    before = net_state(), net_state(a), sandboxes(manager)
    with pytest.raises(AddressInUse):
        manager.connect(C, a, "inner", ip="10.61.0.10")
    with pytest.raises(InvalidNetworkConfig):
        manager.connect(C, a, "inner", mac="02:00:zz")
    assert (net_state(), net_state(a), sandboxes(manager)) == before
    for cid in (A, B):
        manager.disconnect(cid, "inner")
        manager.remove_sandbox(cid)
    manager.remove_network("inner")


def test_failure_at_each_connect_step_leaves_nothing(manager):
    net = manager.create_network("fail", subnet="10.62.0.0/24")
    a = manager.create_sandbox(A)
    # step 1 fails: the container already has an eth0 (not ours: it stays)
    ip("link", "add", "eth0", "type", "bridge", netns_path=a)
    before = net_state(), net_state(a)
    with pytest.raises(NetworkError, match="create veth veth"):
        manager.connect(A, a, "fail")
    assert (net_state(), net_state(a)) == before and manager.endpoints(A) == []
    ip("link", "del", "eth0", netns_path=a)
    # a late step fails inside the container (a default route already there): the veth goes
    ip("link", "add", "blocker0", "type", "bridge", netns_path=a)
    ip("link", "set", "blocker0", "up", netns_path=a)
    ip("route", "add", "default", "dev", "blocker0", netns_path=a)
    before = net_state(), net_state(a)
    with pytest.raises(NetworkError, match="default route"):
        manager.connect(A, a, "fail")
    assert (net_state(), net_state(a)) == before and manager.endpoints(A) == []
    # the address came back: the next endpoint gets the next one in turn, and works
    ip("route", "del", "default", netns_path=a)
    assert manager.connect(A, a, "fail").ip == "10.62.0.4"
    with pytest.raises(Conflict, match="active endpoints"):
        manager.remove_network("fail")
    manager.disconnect(A, "fail")
    manager.remove_sandbox(A)
    manager.remove_network("fail")


class _FailingFirewall(NoFirewall):
    """A firewall that refuses: the manager must undo what it made before asking it."""

    def ensure_network(self, name: str, bridge: str, subnet: str, internal: bool, subnet6: str = "") -> None:
        raise NetworkError("firewall refused the network")

    def publish(self, container_id: str, container_ip: str, bridge: str, ports: list[PortMapping],
                container_ip6: str = "") -> None:
        raise Conflict("Bind for 0.0.0.0:80 failed: port is already allocated")


def test_failed_network_create_leaves_nothing(manager, tmp_path):
    before = net_state()
    with pytest.raises(InvalidNetworkConfig, match="bridge name"):
        manager.create_network("long", options={BRIDGE_NAME_OPTION: "x" * 16})
    ip("link", "add", "br-taken", "type", "bridge")
    with pytest.raises(AddressInUse, match="br-taken"):
        manager.create_network("taken", options={BRIDGE_NAME_OPTION: "br-taken"})
    ip("link", "del", "br-taken")
    with pytest.raises(InvalidNetworkConfig):
        manager.create_network("bad", subnet="10.63.0.0/24", gateway="10.64.0.1")
    refusing = Manager(manager.ipam, str(tmp_path / "exec"), _FailingFirewall())
    with pytest.raises(NetworkError, match="firewall refused"):
        refusing.create_network("nofw", subnet="10.63.0.0/24")
    assert net_state() == before and manager.networks() == []
    # the firewall refusing a published port: the endpoint is undone
    manager.create_network("pub", subnet="10.63.0.0/24")
    a = manager.create_sandbox(A)
    before = net_state(), net_state(a)
    with pytest.raises(Conflict, match="already allocated"):
        refusing.connect(A, a, "pub", ports=[PortMapping("", 80, 80)])
    assert (net_state(), net_state(a)) == before and manager.endpoints(A) == []
    refusing.close()
    manager.remove_sandbox(A)
    manager.remove_network("pub")


def test_subnets_avoid_the_hosts_routes_and_other_networks(manager):
    ip("link", "add", "uplink", "type", "bridge")
    ip("addr", "add", "172.17.0.9/16", "dev", "uplink")
    ip("link", "set", "uplink", "up")
    ip("route", "add", "172.18.4.0/24", "dev", "uplink")
    first = manager.ensure_default()
    second = manager.create_network("second")
    assert (first.name, first.bridge, first.subnet, first.gateway) == ("bridge", "sampan0", "172.19.0.0/16", "172.19.0.1")
    assert second.subnet == "172.20.0.0/16" and second.bridge == f"br-{second.id[:12]}"
    assert manager.ensure_default() == first and manager.get(second.id[:5]) == second
    assert "172.19.0.1/16" in ip("-br", "addr", "show", "sampan0")
    with pytest.raises(AddressInUse, match="Pool overlaps"):
        manager.create_network("third", subnet="172.20.128.0/24")
    manager.remove_network("second")
    manager.remove_network("bridge")
    ip("link", "del", "uplink")


def test_restore_after_a_crash_and_a_reboot(manager, tmp_path):
    net = manager.create_network("keep", subnet="10.65.0.0/24")
    a, b, c = manager.create_sandbox(A), manager.create_sandbox(B), manager.create_sandbox(C)
    manager.connect(A, a, "keep")
    manager.connect(B, b, "keep")
    # a crash mid-setup: the endpoint recorded, the veth made, the container never started
    ep = manager.ipam.allocate(manager.get("keep"), Endpoint(
        container_id=C, network_id=net.id, netns=c, ifname="eth0", host_ifname=host_ifname(), ip="",
        prefixlen=24, gateway=net.gateway, mac=""))
    manager.driver.attach(netns_path=c, bridge=net.bridge, host_ifname=ep.host_ifname, ifname="eth0", ip=ep.ip,
                          prefixlen=24, gateway=net.gateway, mac=ep.mac)
    # and the bridge is gone (a reboot takes it; here it takes the veths with it too)
    ip("link", "del", net.bridge)
    restarted = Manager(Ipam.open(str(tmp_path / "root")), str(tmp_path / "exec"), NoFirewall())
    restarted.restore(live_containers=[A])
    assert "10.65.0.1/24" in ip("-br", "addr", "show", net.bridge)
    assert [e.container_id for e in restarted.ipam.endpoints()] == [A]
    assert sandboxes(restarted) == [A]
    assert link_gone(ep.host_ifname)  # with its namespace, in the background
    restarted.restore(live_containers=[A])  # twice is the same
    restarted.disconnect(A, "keep")         # its veth went with the bridge: nothing to delete, fine
    restarted.remove_sandbox(A)
    restarted.remove_network("keep")
    assert sandboxes(restarted) == [] and restarted.networks() == []
    restarted.close()
    restarted.ipam.close()


def test_concurrent_connects_get_their_own_addresses_and_links(manager):
    manager.create_network("busy", subnet="10.69.0.0/24")
    ids = [f"{n:064x}" for n in range(1, 9)]
    paths = {cid: manager.create_sandbox(cid) for cid in ids}
    endpoints: dict[str, Endpoint] = {}
    failures: list[BaseException] = []

    def join(cid: str) -> None:
        try:
            endpoints[cid] = manager.connect(cid, paths[cid], "busy")
        except BaseException as e:  # noqa: BLE001 - reported below
            failures.append(e)

    threads = [threading.Thread(target=join, args=(cid,)) for cid in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    assert len({e.ip for e in endpoints.values()}) == 8 and len({e.host_ifname for e in endpoints.values()}) == 8
    for cid, ep in endpoints.items():
        assert f"{ep.ip}/24" in ip("-4", "-br", "addr", "show", "eth0", netns_path=paths[cid])
    first, last = endpoints[ids[0]], endpoints[ids[-1]]
    assert _tcp_roundtrip(paths[ids[-1]], last.ip, paths[ids[0]]) == f"ping from {first.ip}".encode()
    for cid in ids:
        manager.remove_sandbox(cid)
    manager.remove_network("busy")


def test_removing_the_sandbox_releases_its_endpoints(manager):
    manager.create_network("one", subnet="10.67.0.0/24")
    manager.create_network("two", subnet="10.68.0.0/24")
    a = manager.create_sandbox(A)
    first, second = manager.connect(A, a, "one"), manager.connect(A, a, "two")
    assert (first.ifname, second.ifname) == ("eth0", "eth1")
    assert "10.68.0.2/24" in ip("-br", "addr", "show", "eth1", netns_path=a)
    assert ip("route", netns_path=a).count("default") == 1  # via the first network only
    manager.remove_sandbox(A)
    assert manager.endpoints(A) == [] and sandboxes(manager) == []
    assert link_gone(first.host_ifname) and link_gone(second.host_ifname)
    manager.remove_network("one")
    manager.remove_network("two")


def test_connect_disconnect_time_per_endpoint(manager, capsys):
    """The run path (sandbox, connect; then remove the sandbox) and a running container's
    connect/disconnect, median ms per endpoint."""
    manager.create_network("fast", subnet="10.66.0.0/24")
    made, connected, removed, disconnected = [], [], [], []
    for _ in range(30):
        t0 = time.perf_counter()
        a = manager.create_sandbox(A)
        t1 = time.perf_counter()
        manager.connect(A, a, "fast")
        t2 = time.perf_counter()
        manager.disconnect(A, "fast")
        t3 = time.perf_counter()
        manager.connect(A, a, "fast")
        t4 = time.perf_counter()
        manager.remove_sandbox(A)
        t5 = time.perf_counter()
        made.append(t1 - t0)
        connected.append(t2 - t1)
        disconnected.append(t3 - t2)
        removed.append(t5 - t4)

    def ms(samples: list[float]) -> str:
        return f"{statistics.median(samples) * 1000:.1f} ms"
    with capsys.disabled():
        print(f"\nsandbox {ms(made)}, connect {ms(connected)}, disconnect {ms(disconnected)}, "
              f"remove sandbox (with its endpoint) {ms(removed)}")
    manager.remove_network("fast")
