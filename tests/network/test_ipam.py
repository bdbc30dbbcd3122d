"""IPAM in SQLite: no address handed out twice (threads, several connections, a reopen),
released addresses come back only after the others, checks of fixed addresses and subnets."""
from __future__ import annotations

import ipaddress
import json
import secrets
import threading
from dataclasses import replace

import pytest

from sampan.errors import Conflict, NotFound
from sampan.network.api import AddressInUse, Endpoint, InvalidNetworkConfig, Network, PoolExhausted
from sampan.network.ipam import Ipam, check_gateway, mac_of, parse_subnet, pick_subnet, pick_subnet6


def _net(name: str = "n", subnet: str = "10.40.0.0/16", ip_range: str = "") -> Network:
    sub = ipaddress.IPv4Network(subnet)
    return Network(id=secrets.token_hex(32), name=name, driver="bridge", bridge=f"br-{name}", subnet=subnet,
                   gateway=check_gateway(sub, ""), ip_range=ip_range, internal=False)


def _ep(net: Network, cid: str, ip: str = "") -> Endpoint:
    return Endpoint(container_id=cid, network_id=net.id, netns="", ifname="eth0", host_ifname="v", ip=ip,
                    prefixlen=net.prefixlen, gateway=net.gateway, mac="")


def test_threads_and_connections_never_share_an_address(tmp_path):
    root = str(tmp_path)
    first = Ipam.open(root)
    net = _net()
    first.add_network(net)
    shared_and_own = [first] * 4 + [Ipam.open(root) for _ in range(4)]
    got: list[str] = []
    lock = threading.Lock()

    def worker(ipam: Ipam, n: int) -> None:
        for i in range(40):
            ip = ipam.allocate(net, _ep(net, f"c{n}-{i}")).ip
            with lock:
                got.append(ip)

    threads = [threading.Thread(target=worker, args=(ipam, n)) for n, ipam in enumerate(shared_and_own)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 320 and len(set(got)) == 320
    assert "10.40.0.1" not in got and "10.40.0.0" not in got
    for ipam in shared_and_own[4:]:
        ipam.close()
    first.close()
    reopened = Ipam.open(root)
    after = reopened.allocate(net, _ep(net, "after-restart")).ip
    assert after not in got and after == "10.40.1.66"  # the next one after the 320 handed out from .2
    assert len(reopened.endpoints(network_id=net.id)) == 321
    reopened.close()


def test_released_address_comes_back_only_after_the_others(tmp_path):
    ipam = Ipam.open(str(tmp_path))
    net = _net(subnet="10.41.0.0/29")  # .1 gateway, .2-.6 for containers
    ipam.add_network(net)
    ips = [ipam.allocate(net, _ep(net, f"c{i}")).ip for i in range(5)]
    assert ips == [f"10.41.0.{i}" for i in range(2, 7)]
    with pytest.raises(PoolExhausted):
        ipam.allocate(net, _ep(net, "one-too-many"))
    ipam.release(net.id, "c1")
    ipam.release(net.id, "c1")  # twice is fine
    assert ipam.allocate(net, _ep(net, "again")).ip == "10.41.0.3"
    ipam.close()


def test_fixed_address_checked_and_taken(tmp_path):
    ipam = Ipam.open(str(tmp_path))
    net = _net(subnet="10.42.0.0/24", ip_range="10.42.0.128/25")
    ipam.add_network(net)
    assert ipam.allocate(net, _ep(net, "a")).ip == "10.42.0.128"
    assert ipam.allocate(net, _ep(net, "b", ip="10.42.0.9")).ip == "10.42.0.9"  # --ip may be outside --ip-range
    with pytest.raises(AddressInUse, match="Address already in use"):
        ipam.allocate(net, _ep(net, "c", ip="10.42.0.9"))
    with pytest.raises(AddressInUse):
        ipam.allocate(net, _ep(net, "d", ip="10.42.0.1"))  # the gateway
    with pytest.raises(InvalidNetworkConfig, match="no configured subnet"):
        ipam.allocate(net, _ep(net, "e", ip="10.43.0.9"))
    with pytest.raises(InvalidNetworkConfig):
        ipam.allocate(net, _ep(net, "f", ip="10.42.0.x"))
    with pytest.raises(AddressInUse, match="already exists"):
        ipam.allocate(net, _ep(net, "a"))
    assert [e.container_id for e in ipam.endpoints(network_id=net.id)] == ["a", "b"]
    assert ipam.endpoints("b")[0].mac == mac_of("10.42.0.9") == "02:42:0a:2a:00:09"
    ipam.close()


def test_networks_names_bridges_and_subnets_are_unique(tmp_path):
    ipam = Ipam.open(str(tmp_path))
    ipam.add_network(_net("a", "10.50.0.0/16"))
    with pytest.raises(AddressInUse, match="already exists"):
        ipam.add_network(_net("a", "10.51.0.0/16"))
    with pytest.raises(AddressInUse, match="Pool overlaps"):
        ipam.add_network(_net("b", "10.50.128.0/17"))
    ipam.add_network(_net("b", "10.51.0.0/16"))
    assert [n.name for n in ipam.networks()] == ["a", "b"]
    ipam.close()


def test_subnet_checks_and_choice():
    assert str(parse_subnet("10.0.0.0/8")) == "10.0.0.0/8"
    for bad, message in (("10.0.0.1/8", "it should be 10.0.0.0/8"), ("nonsense", "invalid subnet"),
                         ("fd00::/64", "only IPv4"), ("10.0.0.0/31", "no room")):
        with pytest.raises(InvalidNetworkConfig, match=message):
            parse_subnet(bad)
    with pytest.raises(InvalidNetworkConfig):
        check_gateway(ipaddress.IPv4Network("10.0.0.0/24"), "10.0.1.1")
    assert check_gateway(ipaddress.IPv4Network("10.0.0.0/24"), "10.0.0.254") == "10.0.0.254"
    taken = [ipaddress.IPv4Network(s) for s in ("172.17.5.0/24", "172.18.0.0/15", "172.20.0.0/16")]
    assert pick_subnet(taken) == "172.21.0.0/16"
    everything = [ipaddress.IPv4Network("172.16.0.0/12"), ipaddress.IPv4Network("192.168.0.0/17")]
    assert pick_subnet(everything) == "192.168.128.0/20"
    with pytest.raises(PoolExhausted, match="non-overlapping"):
        pick_subnet([ipaddress.IPv4Network("0.0.0.0/1"), ipaddress.IPv4Network("128.0.0.0/1")])


def test_a_network_with_an_endpoint_is_not_removed(tmp_path):
    ipam = Ipam.open(str(tmp_path))
    net = _net("busy", "10.52.0.0/24")
    ipam.add_network(net)
    ipam.allocate(net, _ep(net, "c"))
    with pytest.raises(Conflict, match="has active endpoints"):
        ipam.remove_network(net.id)
    ipam.release(net.id, "c")
    ipam.remove_network(net.id)
    with pytest.raises(NotFound):  # a connect that comes after the removal
        ipam.allocate(net, _ep(net, "late"))
    assert ipam.networks() == []
    ipam.close()


def test_ipv6_addresses_in_turn_never_twice_and_old_records(tmp_path):
    ipam = Ipam.open(str(tmp_path))
    net = replace(_net("six", "10.53.0.0/16"), subnet6="fd00:53::/120", gateway6="fd00:53::1")
    ipam.add_network(net)
    got = [ipam.allocate(net, _ep(net, f"c{i}")) for i in range(3)]
    assert [(e.ip6, e.prefixlen6, e.gateway6) for e in got] == [
        (f"fd00:53::{n}", 120, "fd00:53::1") for n in (2, 3, 4)]
    ipam.release(net.id, "c0")
    assert ipam.allocate(net, _ep(net, "c3")).ip6 == "fd00:53::5"  # in turn, not the one just freed
    with pytest.raises(AddressInUse):
        ipam.allocate(net, replace(_ep(net, "c4"), ip6="fd00:53::3"))
    with pytest.raises(InvalidNetworkConfig, match="no IPv6 subnet"):
        ipam.allocate(_net("four"), replace(_ep(net, "c4"), ip6="fd00:53::9"))
    # 256 addresses but the subnet's own and the gateway's (no broadcast in IPv6): the last
    # one given wraps around to the first freed
    for i in range(4, 255):
        ipam.allocate(net, _ep(net, f"c{i}"))
    with pytest.raises(PoolExhausted, match="no available IPv6 addresses"):
        ipam.allocate(net, _ep(net, "one-too-many"))
    assert ipam.endpoints(container_id="c253")[0].ip6 == "fd00:53::ff"
    assert ipam.endpoints(container_id="c254")[0].ip6 == "fd00:53::2"
    with pytest.raises(AddressInUse, match="Pool overlaps"):
        ipam.add_network(replace(_net("other", "10.54.0.0/24"), subnet6="fd00:53::80/121", gateway6="fd00:53::81"))
    assert [str(s) for s in ipam.subnets6()] == ["fd00:53::/120"]
    # records written before IPv6 existed (no subnet6/gateway6, no ip6) still load, as IPv4-only
    old = _net("old", "10.55.0.0/24")
    ipam.add_network(old)
    ep = ipam.allocate(old, _ep(old, "o"))
    for table, key, rid in (("networks", "id", old.id), ("network_endpoints", "network_id", old.id)):
        record = json.loads(ipam.conn.execute(f"SELECT record FROM {table} WHERE {key} = ?", (rid,)).fetchone()[0])
        for gone in ("subnet6", "gateway6", "ip6", "prefixlen6"):
            record.pop(gone, None)
        ipam.conn.execute(f"UPDATE {table} SET record = ? WHERE {key} = ?", (json.dumps(record), rid))
    assert [n for n in ipam.networks() if n.name == "old"] == [old] and not old.enable_ipv6
    assert ipam.endpoints(container_id="o") == [ep] and ep.ip6 == ""
    ipam.close()


def test_ula_subnet_choice():
    for _ in range(20):
        picked = ipaddress.IPv6Network(pick_subnet6([ipaddress.IPv6Network("fd00::/9"), ipaddress.IPv6Network("::/0")]))
        assert picked.prefixlen == 64 and picked.subnet_of(ipaddress.IPv6Network("fd80::/9"))
        assert int(picked.network_address) & ((1 << 80) - 1) == 0  # subnet id 0 of its /48
    with pytest.raises(PoolExhausted, match="IPv6"):
        pick_subnet6([ipaddress.IPv6Network("fd00::/8")])
