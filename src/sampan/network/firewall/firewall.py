"""NftFirewall: network/api.py's Firewall on nftables (libnftables in-process, JSON).

Everything lives in ``table ip sampan`` and, for IPv6 networks, ``table ip6 sampan``
(rules.py), plus, where the host has iptables-nft's (ip6tables-nft's) FORWARD chain, one jump
to a chain of sampan's own there (forward.py). Each table is made with the first network or
published port of its family and deleted with the last, so a host with nothing of sampan's
has nothing of sampan's in its ruleset. What belongs to whom is the comment on each set and
map element; the first call reads it back from the kernel (a restarted daemon picks up where
the last one left), after which an in-memory index answers the conflict checks.

A firewall works on the network namespace of the thread that makes it (its netlink socket,
the bind checks of host ports and the bridges' sysctls): use it from threads of that namespace.
Calls are serialised by a lock; each change is one kernel transaction.
"""
from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass, replace
from typing import Any, Iterable

from ... import errors
from ..api import NetworkError, PortMapping
from . import forward, rules
from .nftables import Nftables, NftablesError
from .ports import Binding, Listeners, allocated, first_conflict, in_use, resolve


_FAMILY = {4: "ip", 6: "ip6"}  # a Binding's family -> its table's


@dataclass(frozen=True)
class _Network:
    bridge: str
    subnet: str
    internal: bool
    ipv6: bool = False  # in the ip6 table too
    subnet6: str = ""

    @property
    def families(self) -> tuple[str, ...]:
        return ("ip", "ip6") if self.ipv6 else ("ip",)

    def same(self, other: "_Network") -> bool:
        """Equal, but for the subnets of an internal network (which a restart does not know)."""
        return (self.bridge, self.internal, self.ipv6) == (other.bridge, other.internal, other.ipv6) and (
            self.internal or (self.subnet, self.subnet6) == (other.subnet, other.subnet6))


def _route_localnet(bridge: str, on: bool) -> None:
    """127.0.0.1:published reaches a container only if the bridge may route loopback sources."""
    path = f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet"
    try:
        with open(path, "w") as f:
            f.write("1" if on else "0")
    except FileNotFoundError:
        if on:
            raise NetworkError(f"firewall: bridge {bridge} does not exist") from None


def _prefix(subnet: str) -> dict[str, Any]:
    prefix, _, length = subnet.partition("/")
    return {"prefix": {"addr": prefix, "len": int(length)}}


def _network_elements(name: str, net: _Network) -> list[tuple[str, str, list[Any], list[Any]]]:
    """(family, set, elements to add, keys to delete) of a network."""
    pair = {"concat": [net.bridge, net.bridge]}
    out = []
    for family, subnet in zip(net.families, (net.subnet, net.subnet6)):
        out += [(family, rules.BRIDGES, [rules.tagged(net.bridge, name)], [net.bridge]),
                (family, rules.SAME_BRIDGE, [rules.tagged(pair, name)], [pair])]
        if net.internal:  # no egress: its subnet is in no set (and not known after a restart)
            out.append((family, rules.INTERNAL, [rules.tagged(net.bridge, name)], [net.bridge]))
        else:
            out.append((family, rules.EGRESS, [rules.tagged(_prefix(subnet), name)], [_prefix(subnet)]))
    return out


def _binding_elements(container_id: str, b: Binding) -> list[tuple[str, str, list[Any], list[Any]]]:
    """(family, map, elements to add, keys to delete) of a published binding."""
    family = _FAMILY[b.family]
    key = rules.port_key(family, b.proto, b.host_ip, b.host_low, b.host_high)
    out = [(family, rules.PORT_ADDR, [[rules.tagged(key, container_id), b.container_ip]], [key])]
    if b.container_low != b.host_low:
        shift = b.container_low - b.host_low
        keys = [rules.port_key(family, b.proto, b.host_ip, p, p) for p in range(b.host_low, b.host_high + 1)]
        out.append((family, rules.PORT_NUM, [[rules.tagged(k, container_id), k["concat"][2] + shift] for k in keys],
                    keys))
    return out


def _commands(op: str, parts: list[tuple[str, str, list[Any], list[Any]]]) -> list[dict[str, Any]]:
    index = 2 if op == "add" else 3
    return [rules.element(op, part[0], part[1], part[index]) for part in parts]


def _parse_port_key(value: dict[str, Any]) -> tuple[str, str, int, int]:
    proto, address, port = value["concat"]
    host_ip = "" if isinstance(address, dict) else address
    low, high = port["range"] if isinstance(port, dict) else (port, port)
    return proto, host_ip, int(low), int(high)


class NftFirewall:
    """Masquerade, isolation and published ports for sampan's bridge networks."""

    def __init__(self) -> None:
        self._nft = Nftables()
        self._lock = threading.Lock()
        self._loaded = False
        self._tables: set[str] = set()  # the families whose table exists
        self._networks: dict[str, _Network] = {}
        self._published: dict[str, list[Binding]] = {}

    # -- the Firewall protocol

    def ensure_network(self, name: str, bridge: str, subnet: str, internal: bool, subnet6: str = "") -> None:
        try:
            normal = str(ipaddress.IPv4Network(subnet, strict=False))
        except ValueError:
            raise errors.Invalid(f"invalid subnet for network {name}: {subnet!r} (IPv4 only)") from None
        try:
            normal6 = str(ipaddress.IPv6Network(subnet6, strict=False)) if subnet6 else ""
        except ValueError:
            raise errors.Invalid(f"invalid IPv6 subnet for network {name}: {subnet6!r}") from None
        net = _Network(bridge, normal, internal, bool(normal6), normal6)
        with self._lock:
            self._load()
            old = self._networks.get(name)
            if old is not None and not old.same(net):
                self._remove_network(name)
            _route_localnet(bridge, True)
            try:
                self._ensure_tables(net.families)
                self._nft.run(_commands("add", _network_elements(name, net)))
                self._networks[name] = net
                for family in net.families:
                    forward.admit(self._nft, name, bridge, family)
            except BaseException:
                if name in self._networks:
                    self._remove_network(name)  # the elements are in: the forward step failed
                else:
                    _route_localnet(bridge, False)
                self._drop_unused_tables()
                raise

    def remove_network(self, name: str) -> None:
        with self._lock:
            self._load()
            self._remove_network(name)
            self._drop_unused_tables()

    def publish(self, container_id: str, container_ip: str, bridge: str,
                ports: list[PortMapping], container_ip6: str = "") -> list[PortMapping]:
        """Publish ``ports`` (as Docker does, nothing on an internal network) and return them
        with the host ports picked for a host port of 0 or a host range (with ``container_ip6``,
        a mapping on every host address comes back twice: IPv4 "", IPv6 "::")."""
        with self._lock:
            self._load()
            if any(n.bridge == bridge and n.internal for n in self._networks.values()):
                return []
            own = self._published.get(container_id, [])
            held = [b for bindings in self._published.values() for b in bindings]
            listeners = Listeners()

            def free(b: Binding) -> bool:
                return first_conflict(b, held) is None and listeners.first(b) is None

            wanted = resolve(container_ip, ports, free, container_ip6)
            new: list[Binding] = []
            for b in wanted:
                if b in own or b in new:
                    continue
                port = first_conflict(b, held + new)
                if port is not None:
                    raise allocated(b, port)
                port = listeners.first(b)
                if port is not None:
                    raise in_use(b, port)
                new.append(b)
            if new:
                parts = [part for b in new for part in _binding_elements(container_id, b)]
                try:
                    self._ensure_tables({_FAMILY[b.family] for b in new})
                    self._nft.run(_commands("add", parts))
                except BaseException:
                    self._drop_unused_tables()
                    raise
                self._published[container_id] = own + new
            return [b.mapping() for b in wanted]

    def unpublish(self, container_id: str) -> None:
        with self._lock:
            self._load()
            self._unpublish(container_id)
            self._drop_unused_tables()

    def cleanup(self, networks: Iterable[str], containers: Iterable[str]) -> None:
        keep_networks, keep_containers = set(networks), set(containers)
        with self._lock:
            self._load()
            for container_id in [c for c in self._published if c not in keep_containers]:
                self._unpublish(container_id)
            for name in [n for n in self._networks if n not in keep_networks]:
                self._remove_network(name)
            self._drop_unused_tables()

    def published(self, container_id: str) -> list[PortMapping]:
        """What ``container_id`` has published (after a restart too: read from the kernel)."""
        with self._lock:
            self._load()
            return [b.mapping() for b in self._published.get(container_id, [])]

    def close(self) -> None:
        self._nft.close()

    # -- under the lock

    def _remove_network(self, name: str) -> None:
        net = self._networks.pop(name, None)
        if net is None:
            return
        parts = [part for part in _network_elements(name, net) if part[0] in self._tables]
        if parts:
            self._nft.run(_commands("delete", parts))
        for family in net.families:
            forward.revoke(self._nft, name, last=not any(family in n.families for n in self._networks.values()),
                           family=family)
        _route_localnet(net.bridge, False)

    def _unpublish(self, container_id: str) -> None:
        bindings = self._published.pop(container_id, [])
        parts = [part for b in bindings for part in _binding_elements(container_id, b) if part[0] in self._tables]
        if parts:
            self._nft.run(_commands("delete", parts))

    def _ensure_tables(self, families: Iterable[str]) -> None:
        for family in sorted(set(families) - self._tables):
            self._nft.run(rules.skeleton(family))
            self._tables.add(family)

    def _in_use(self, family: str) -> bool:
        return (any(family in n.families for n in self._networks.values())
                or any(_FAMILY[b.family] == family for bindings in self._published.values() for b in bindings))

    def _drop_unused_tables(self) -> None:
        for family in sorted(self._tables):
            if not self._in_use(family):
                self._nft.run([rules.delete_table(family)])
                self._tables.discard(family)

    def _load(self) -> None:
        """Read what the kernel's tables say into the index, once."""
        if self._loaded:
            return
        for family in rules.FAMILIES:
            try:
                items = self._nft.run([rules.list_table(family)])
            except NftablesError:
                continue  # no table: nothing of sampan's in it yet (or since a reboot)
            self._tables.add(family)
            self._index(family, items)
        self._loaded = True

    def _index(self, family: str, items: list[dict[str, Any]]) -> None:
        elements: dict[str, list[Any]] = {}
        for item in items:
            obj = item.get("set") or item.get("map")
            if obj:
                elements[obj["name"]] = obj.get("elem", [])
        bridges = {rules.untag(e)[1]: rules.untag(e)[0] for e in elements.get(rules.BRIDGES, [])}
        internal = {rules.untag(e)[1] for e in elements.get(rules.INTERNAL, [])}
        subnets = {}
        for e in elements.get(rules.EGRESS, []):
            value, name = rules.untag(e)
            subnets[name] = f"{value['prefix']['addr']}/{value['prefix']['len']}"
        for name, bridge in bridges.items():
            if family == "ip":
                self._networks[name] = _Network(bridge, subnets.get(name, ""), name in internal)
            else:  # listed after "ip": the network is there already (but for a table left half-made)
                known = self._networks.get(name) or _Network(bridge, "", name in internal)
                self._networks[name] = replace(known, ipv6=True, subnet6=subnets.get(name, ""))
        shifted: dict[tuple[str, str, int], int] = {}
        for key, port in elements.get(rules.PORT_NUM, []):
            proto, host_ip, low, _ = _parse_port_key(rules.untag(key)[0])
            shifted[(proto, host_ip, low)] = int(port)
        for key, container_ip in elements.get(rules.PORT_ADDR, []):
            value, container_id = rules.untag(key)
            proto, host_ip, low, high = _parse_port_key(value)
            container_low = shifted.get((proto, host_ip, low), low)
            self._published.setdefault(container_id, []).append(
                Binding(proto, host_ip, low, high, container_ip, container_low))
