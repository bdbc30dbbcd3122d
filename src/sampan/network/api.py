"""The network layer's types, its errors, and the Firewall protocol that firewall/ implements.

The manager (manager.py) makes networks and endpoints; the firewall gives them NAT, published
ports and isolation. Everything here is plain data so the engine can store and show it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Protocol

from .. import errors


class NetworkError(errors.Error):
    """A kernel step of network setup failed (the message names the step and the object)."""


class InvalidNetworkConfig(errors.Invalid):
    """A bad subnet, gateway, range, address, MAC or option: refused before anything is made."""


class AddressInUse(errors.Conflict):
    """A fixed address (``--ip``) or subnet is already taken."""


class PoolExhausted(errors.Unavailable):
    """No free address in a network, or no free subnet for a new network."""


@dataclass(frozen=True)
class PortMapping:
    """One published port (or the first of a range; ranges are expanded by the caller or kept
    as ``host_port_end``/``container_port_end``, both inclusive, of equal length)."""
    host_ip: str           # "" = every host address
    host_port: int         # 0 = the firewall picks one (-P)
    container_port: int
    proto: str = "tcp"     # tcp | udp | sctp
    host_port_end: int = 0       # 0 = a single port
    container_port_end: int = 0


@dataclass(frozen=True)
class Network:
    id: str                # 64 hex digits
    name: str
    driver: str            # bridge
    bridge: str            # the host link's name
    subnet: str            # "172.18.0.0/16"
    gateway: str           # "172.18.0.1"
    ip_range: str          # "" = the whole subnet
    internal: bool
    options: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    created: float = 0.0
    # IPv6 (--ipv6), beside the IPv4 subnet; "" on an IPv4-only network (and in records
    # written before IPv6 existed, which load with these defaults)
    subnet6: str = ""      # "fd12:3456:789a::/64"
    gateway6: str = ""     # "fd12:3456:789a::1"

    @property
    def prefixlen(self) -> int:
        return int(self.subnet.rpartition("/")[2])

    @property
    def enable_ipv6(self) -> bool:
        return bool(self.subnet6)

    @property
    def prefixlen6(self) -> int:
        return int(self.subnet6.rpartition("/")[2]) if self.subnet6 else 0


@dataclass(frozen=True)
class Endpoint:
    container_id: str
    network_id: str
    netns: str             # the namespace file the container joins
    ifname: str            # inside the container: eth0, eth1, ...
    host_ifname: str       # the veth's host side
    ip: str
    prefixlen: int
    gateway: str           # the network's (an internal network's endpoints get no default route)
    mac: str
    aliases: tuple[str, ...] = ()
    ports: tuple[PortMapping, ...] = ()
    ip6: str = ""          # on an IPv6 network ("" otherwise)
    prefixlen6: int = 0
    gateway6: str = ""


class Firewall(Protocol):
    """What the manager asks of the firewall (nftables, in sampan's own tables only).

    Every call is idempotent: ensuring what exists or removing what is gone succeeds."""

    def ensure_network(self, name: str, bridge: str, subnet: str, internal: bool, subnet6: str = "") -> None:
        """Masquerade for the subnet (and ``subnet6``, an IPv6 network's: "" for none; not
        for internal networks), isolation from other networks."""

    def remove_network(self, name: str) -> None: ...

    def publish(self, container_id: str, container_ip: str, bridge: str,
                ports: list[PortMapping], container_ip6: str = "") -> list[PortMapping]:
        """DNAT each mapping to the container and return the mappings as published (a host
        port of 0 or a host range resolved; none on an internal network); a host port already
        taken raises errors.Conflict with Docker's message and publishes nothing. With
        ``container_ip6`` (an IPv6 network), a mapping on every host address is published on
        IPv4 (host_ip "") and IPv6 ("::") with the same host port, and an IPv6 host address
        goes to that address."""

    def unpublish(self, container_id: str) -> None: ...

    def cleanup(self, networks: Iterable[str], containers: Iterable[str]) -> None:
        """Remove what belongs to a network or container not in these lists (after a crash)."""


class NoFirewall:
    """A Firewall that does nothing: a host whose firewall sampan must not touch (dockerd's
    --iptables=false), where containers get addresses and routes but no NAT or published ports."""

    def ensure_network(self, name: str, bridge: str, subnet: str, internal: bool, subnet6: str = "") -> None:
        return None

    def remove_network(self, name: str) -> None:
        return None

    def publish(self, container_id: str, container_ip: str, bridge: str,
                ports: list[PortMapping], container_ip6: str = "") -> list[PortMapping]:
        return []

    def unpublish(self, container_id: str) -> None:
        return None

    def cleanup(self, networks: Iterable[str], containers: Iterable[str]) -> None:
        return None
