"""Networks and their addresses in the engine's SQLite state (state.db): IPAM.

A network's row holds its subnet, gateway and bridge; each address handed out is a row
keyed by (network, address), so the database itself refuses to hand one out twice, across
threads, processes and restarts. Every change runs in ``statedb.transaction`` (BEGIN
IMMEDIATE) under the instance's lock (one connection is shared by the threads that use it).
Endpoints (a container's attachment to a network) are recorded in the same transaction as
their address, before any link is made, so a crash mid-setup leaves a record that
``Manager.restore`` cleans up.

Addresses are handed out in turn after the last one given (wrapping), as Docker does, so a
released address is not reused at once (neighbours' ARP caches still point at the old MAC).

An IPv6 network (``Network.subnet6``) hands each endpoint an IPv6 address too, in the same
transaction, from tables of its own (``network_addresses6``, and ``network_cursors6`` for the
last one given: 128-bit addresses do not fit SQLite's INTEGER), so a database made before
IPv6 only gains tables.
"""
from __future__ import annotations

import ipaddress
import itertools
import json
import secrets
import sqlite3
import threading
from dataclasses import asdict, replace
from typing import Iterable

from .. import statedb
from ..errors import Conflict, NotFound
from .api import AddressInUse, Endpoint, InvalidNetworkConfig, Network, PoolExhausted, PortMapping

# network_addresses and network_addresses6: one address table per IP version, of the same shape
SCHEMA = """
CREATE TABLE IF NOT EXISTS networks (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    bridge TEXT NOT NULL UNIQUE,
    subnet TEXT NOT NULL,
    record TEXT NOT NULL,
    last_address INTEGER NOT NULL DEFAULT 0
);
""" + "".join(f"""
CREATE TABLE IF NOT EXISTS {table} (
    network_id TEXT NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
    address TEXT NOT NULL,
    container_id TEXT NOT NULL,
    PRIMARY KEY (network_id, address),
    UNIQUE (network_id, container_id)
);""" for table in ("network_addresses", "network_addresses6")) + """
CREATE TABLE IF NOT EXISTS network_cursors6 (
    network_id TEXT PRIMARY KEY REFERENCES networks(id) ON DELETE CASCADE,
    last_address TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS network_endpoints (
    container_id TEXT NOT NULL,
    network_id TEXT NOT NULL REFERENCES networks(id),
    record TEXT NOT NULL,
    PRIMARY KEY (container_id, network_id)
);
"""

# Docker's default address pools: 172.17-31.0.0/16, then 192.168.0.0/16 in /20s.
DEFAULT_POOLS: tuple[tuple[str, int], ...] = (*((f"172.{n}.0.0/16", 16) for n in range(17, 32)),
                                              ("192.168.0.0/16", 20))

IPv4Net = ipaddress.IPv4Network
IPv6Net = ipaddress.IPv6Network
IPNet = IPv4Net | IPv6Net
ULA_PREFIX = ipaddress.IPv6Network("fd00::/8")  # RFC 4193's locally assigned unique local addresses


def parse_subnet(text: str, version: int = 4) -> IPNet:
    """A network's subnet of that IP ``version``, in its canonical form, with room for a
    gateway and a container."""
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidNetworkConfig(f"invalid subnet {text}") from None
    if net.version != version:
        raise InvalidNetworkConfig(f"invalid subnet {text}: only IPv4 subnets are supported" if version == 4
                                   else f"invalid IPv6 subnet {text}: it is not an IPv6 subnet")
    if str(net) != text:
        raise InvalidNetworkConfig(f"invalid subnet {text}: it should be {net}")
    if net.prefixlen > net.max_prefixlen - 2:
        raise InvalidNetworkConfig(f"invalid subnet {text}: it has no room for a gateway and a container")
    return net


def _address(text: str, what: str, version: int = 4) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.IPv4Address(text) if version == 4 else ipaddress.IPv6Address(text)
    except ValueError:
        raise InvalidNetworkConfig(f"invalid {what} {text}") from None


def _reserved(subnet: IPNet) -> set[int]:
    """Addresses no one is given: the network's own, and IPv4's broadcast (IPv6 has none)."""
    ends = {int(subnet.network_address)}
    if subnet.version == 4:
        ends.add(int(subnet.broadcast_address))
    return ends


def check_gateway(subnet: IPNet, gateway: str) -> str:
    """The gateway: the one given (inside the subnet, a host address) or the first host address."""
    if not gateway:
        return str(subnet.network_address + 1)
    addr = _address(gateway, "gateway", subnet.version)
    if addr not in subnet or int(addr) in _reserved(subnet):
        raise InvalidNetworkConfig(f"gateway {gateway} is not a host address of subnet {subnet}")
    return str(addr)


def check_ip_range(subnet: IPv4Net, ip_range: str) -> str:
    if not ip_range:
        return ""
    try:
        rng = ipaddress.IPv4Network(ip_range, strict=True)
    except ValueError:
        raise InvalidNetworkConfig(f"invalid ip-range {ip_range}") from None
    if not rng.subnet_of(subnet):
        raise InvalidNetworkConfig(f"ip-range {ip_range} is not inside subnet {subnet}")
    return ip_range


def pick_subnet(taken: Iterable[IPv4Net], pools: Iterable[tuple[str, int]] = DEFAULT_POOLS) -> str:
    """The first subnet of the pools that overlaps none of ``taken`` (the host's routes and
    addresses, other networks' subnets)."""
    taken = list(taken)
    for pool, prefixlen in pools:
        for candidate in ipaddress.IPv4Network(pool).subnets(new_prefix=prefixlen):
            if not any(candidate.overlaps(t) for t in taken):
                return str(candidate)
    raise PoolExhausted("could not find an available, non-overlapping IPv4 address pool among the defaults "
                        "to assign to the network")


def pick_subnet6(taken: Iterable[IPv6Net], attempts: int = 64) -> str:
    """A ULA /64 (fdXX:XXXX:XXXX::/64, a random 40-bit global id as RFC 4193 says) that
    overlaps none of ``taken`` (the host's IPv6 routes and addresses, other networks')."""
    taken = [t for t in taken if t.prefixlen]  # the default route covers everything
    for _ in range(attempts):
        global_id = secrets.randbits(40)
        candidate = ipaddress.IPv6Network((int(ULA_PREFIX.network_address) | global_id << 80, 64))
        if not any(candidate.overlaps(t) for t in taken):
            return str(candidate)
    raise PoolExhausted("could not find an available, non-overlapping IPv6 address pool to assign to the network")


def mac_of(ip: str) -> str:
    """Docker's MAC for an address: 02:42 and the address's four bytes."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(ip).packed)


def _network_of(row: sqlite3.Row | tuple) -> Network:
    return Network(**json.loads(row[0]))


def _endpoint_of(text: str) -> Endpoint:
    rec = json.loads(text)
    rec["aliases"] = tuple(rec["aliases"])
    rec["ports"] = tuple(PortMapping(**p) for p in rec["ports"])
    return Endpoint(**rec)


class Ipam:
    """Networks, addresses and endpoint records in ``conn`` (state.db; ``Ipam.open(root)``)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        conn.executescript(SCHEMA)
        self.conn = conn
        self.lock = threading.RLock()

    @classmethod
    def open(cls, root: str) -> Ipam:
        return cls(statedb.connect(root, SCHEMA))

    def close(self) -> None:
        self.conn.close()

    # ------------------------------------------------------------------ networks
    def add_network(self, net: Network) -> None:
        """Record a network; a name, bridge or overlapping subnet (IPv4 or IPv6) already taken is refused."""
        subnet = parse_subnet(net.subnet)
        subnet6 = parse_subnet(net.subnet6, 6) if net.subnet6 else None
        with self.lock, statedb.transaction(self.conn) as c:
            for row in c.execute("SELECT record FROM networks"):
                other = _network_of(row)
                if other.name == net.name:
                    raise AddressInUse(f"network with name {net.name} already exists")
                if other.bridge == net.bridge:
                    raise AddressInUse(f"bridge name {net.bridge} is already used by network {other.name}")
                if subnet.overlaps(ipaddress.IPv4Network(other.subnet)) or (
                        subnet6 and other.subnet6 and subnet6.overlaps(ipaddress.IPv6Network(other.subnet6))):
                    raise AddressInUse("invalid pool request: Pool overlaps with other one on this address space")
            c.execute("INSERT INTO networks (id, name, bridge, subnet, record) VALUES (?, ?, ?, ?, ?)",
                      (net.id, net.name, net.bridge, net.subnet, json.dumps(asdict(net))))

    def remove_network(self, network_id: str) -> None:
        """Forget a network; refused while it has an endpoint (checked in the same transaction
        as the removal, so a concurrent connect either comes first and refuses it, or fails)."""
        with self.lock, statedb.transaction(self.conn) as c:
            row = c.execute("SELECT name FROM networks WHERE id = ?", (network_id,)).fetchone()
            if row and c.execute("SELECT 1 FROM network_endpoints WHERE network_id = ? LIMIT 1", (network_id,)).fetchone():
                raise Conflict(f"error while removing network: network {row[0]} id {network_id} has active endpoints")
            c.execute("DELETE FROM networks WHERE id = ?", (network_id,))

    def networks(self) -> list[Network]:
        with self.lock:
            rows = self.conn.execute("SELECT record FROM networks ORDER BY name").fetchall()
        return [_network_of(r) for r in rows]

    def subnets(self) -> list[IPv4Net]:
        with self.lock:
            rows = self.conn.execute("SELECT subnet FROM networks").fetchall()
        return [ipaddress.IPv4Network(r[0]) for r in rows]

    def subnets6(self) -> list[IPv6Net]:
        return [ipaddress.IPv6Network(n.subnet6) for n in self.networks() if n.subnet6]

    # ----------------------------------------------------------------- addresses
    def allocate(self, net: Network, endpoint: Endpoint) -> Endpoint:
        """Hand ``endpoint`` an address of ``net`` (``endpoint.ip`` if set: checked and taken),
        on an IPv6 network an IPv6 one too (``endpoint.ip6`` likewise), and record the
        endpoint, in one transaction. Returns the endpoint with its addresses (and Docker's
        MAC for the IPv4 one when it had none)."""
        if endpoint.ip6 and not net.subnet6:
            raise InvalidNetworkConfig(f"network {net.name} has no IPv6 subnet for the IPv6 address {endpoint.ip6}")
        subnet = ipaddress.IPv4Network(net.subnet)
        with self.lock, statedb.transaction(self.conn) as c:
            if not c.execute("SELECT 1 FROM networks WHERE id = ?", (net.id,)).fetchone():
                raise NotFound(f"network {net.name} not found")  # removed meanwhile
            if c.execute("SELECT 1 FROM network_endpoints WHERE container_id = ? AND network_id = ?",
                         (endpoint.container_id, net.id)).fetchone():
                raise AddressInUse(f"endpoint with name {endpoint.container_id[:12]} already exists in network {net.name}")
            last = c.execute("SELECT last_address FROM networks WHERE id = ?", (net.id,)).fetchone()[0]
            chosen = _take(c, "network_addresses", net.id, subnet,
                           ipaddress.IPv4Network(net.ip_range) if net.ip_range else subnet,
                           net.gateway, endpoint.ip, last)
            ip = str(ipaddress.IPv4Address(chosen))
            c.execute("INSERT INTO network_addresses VALUES (?, ?, ?)", (net.id, ip, endpoint.container_id))
            c.execute("UPDATE networks SET last_address = ? WHERE id = ?", (chosen, net.id))
            done = replace(endpoint, ip=ip, mac=endpoint.mac or mac_of(ip))
            if net.subnet6:
                subnet6 = ipaddress.IPv6Network(net.subnet6)
                row = c.execute("SELECT last_address FROM network_cursors6 WHERE network_id = ?", (net.id,)).fetchone()
                chosen = _take(c, "network_addresses6", net.id, subnet6, subnet6, net.gateway6, endpoint.ip6,
                               int(ipaddress.IPv6Address(row[0])) if row else 0)
                ip6 = str(ipaddress.IPv6Address(chosen))
                c.execute("INSERT INTO network_addresses6 VALUES (?, ?, ?)", (net.id, ip6, endpoint.container_id))
                c.execute("INSERT OR REPLACE INTO network_cursors6 VALUES (?, ?)", (net.id, ip6))
                done = replace(done, ip6=ip6, prefixlen6=net.prefixlen6, gateway6=net.gateway6)
            c.execute("INSERT INTO network_endpoints VALUES (?, ?, ?)",
                      (endpoint.container_id, net.id, json.dumps(asdict(done))))
        return done

    def update_endpoint(self, endpoint: Endpoint) -> Endpoint:
        """Record what changed in an endpoint after its address (the ports as published)."""
        with self.lock, statedb.transaction(self.conn) as c:
            c.execute("UPDATE network_endpoints SET record = ? WHERE container_id = ? AND network_id = ?",
                      (json.dumps(asdict(endpoint)), endpoint.container_id, endpoint.network_id))
        return endpoint

    def release(self, network_id: str, container_id: str) -> None:
        """Free the container's addresses on the network and forget its endpoint (a no-op when gone)."""
        with self.lock, statedb.transaction(self.conn) as c:
            for table in ("network_addresses", "network_addresses6"):
                c.execute(f"DELETE FROM {table} WHERE network_id = ? AND container_id = ?", (network_id, container_id))
            c.execute("DELETE FROM network_endpoints WHERE network_id = ? AND container_id = ?",
                      (network_id, container_id))

    def endpoints(self, container_id: str | None = None, network_id: str | None = None) -> list[Endpoint]:
        query, args = "SELECT record FROM network_endpoints WHERE 1", []
        if container_id is not None:
            query, args = query + " AND container_id = ?", [*args, container_id]
        if network_id is not None:
            query, args = query + " AND network_id = ?", [*args, network_id]
        with self.lock:
            rows = self.conn.execute(query + " ORDER BY rowid", args).fetchall()
        return [_endpoint_of(r[0]) for r in rows]


def _take(c: sqlite3.Connection, table: str, network_id: str, subnet: IPNet, pool: IPNet, gateway: str,
          wanted: str, last: int) -> int:
    """The address (as an int) an endpoint gets from ``table``'s addresses of the network:
    ``wanted`` if given (inside the subnet, not reserved nor held), else the first free one of
    ``pool`` after ``last``, the one given before (wrapping)."""
    taken = _reserved(subnet) | {int(ipaddress.ip_address(gateway))}
    used = {int(ipaddress.ip_address(r[0]))
            for r in c.execute(f"SELECT address FROM {table} WHERE network_id = ?", (network_id,))}
    if wanted:
        address = _address(wanted, "IP address" if subnet.version == 4 else "IPv6 address", subnet.version)
        if address not in subnet:
            raise InvalidNetworkConfig(f"no configured subnet or ip-range contain the IP address {wanted}")
        if int(address) in taken or int(address) in used:
            raise AddressInUse("Address already in use")
        return int(address)
    first, end = int(pool.network_address), int(pool.network_address) + pool.num_addresses - 1
    start = last + 1 if first <= last < end else first
    for candidate in itertools.chain(range(start, end + 1), range(first, start)):
        if candidate not in taken and candidate not in used:
            return candidate
    raise PoolExhausted(f"no available IPv{subnet.version} addresses on this network's address pools: {pool}")
