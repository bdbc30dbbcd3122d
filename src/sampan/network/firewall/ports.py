"""Published ports: a PortMapping resolved into host-port bindings, the conflicts Docker
refuses, and the check that nothing else on the host listens on a port about to be published.

A binding is IPv4 or IPv6 as its container address is (DNAT keeps the family): a mapping on
every host address of a container with an IPv6 address too is two bindings, one per family,
with the same host port; "0.0.0.0" asks for IPv4 only, "::" for IPv6 only.
"""
from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass
from typing import Callable, Iterable

from ... import errors
from ..api import PortMapping
from .rules import PROTOS

_PORT_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"
_SCTP = getattr(socket, "IPPROTO_SCTP", 132)
_BIND_AT_MOST = 64  # ports of one binding tried by binding them, above which /proc is read


class PortAllocated(errors.Conflict):
    """A host port another published port (of any container) already holds."""


class PortInUse(errors.Conflict):
    """A host port something else on the host listens on."""


@dataclass(frozen=True)
class Binding:
    """Host ports host_low..host_high of ``proto`` on ``host_ip`` ("" = every address) sent to
    container_ip's ports container_low.. (as many)."""
    proto: str
    host_ip: str
    host_low: int
    host_high: int
    container_ip: str
    container_low: int

    @property
    def family(self) -> int:
        return 6 if ":" in self.container_ip else 4

    def overlaps(self, other: "Binding") -> bool:
        return (self.proto == other.proto and self.family == other.family
                and (not self.host_ip or not other.host_ip or self.host_ip == other.host_ip)
                and self.host_low <= other.host_high and other.host_low <= self.host_high)

    def shown(self, port: int) -> str:
        """Docker's words for the host side: "0.0.0.0:8080", ":::8080", "fd00::1:8080"."""
        return f"{self.host_ip or _ANY[self.family]}:{port}"

    def mapping(self) -> PortMapping:
        """As published: host_ip "" is every IPv4 address, "::" every IPv6 one."""
        single = self.host_low == self.host_high
        return PortMapping(self.host_ip or ("::" if self.family == 6 else ""), self.host_low, self.container_low,
                           self.proto, 0 if single else self.host_high,
                           0 if single else self.container_low + self.host_high - self.host_low)


_ANY = {4: "0.0.0.0", 6: "::"}


def _targets(value: str, container_ip: str, container_ip6: str) -> tuple[str, list[str]]:
    """(the host address, "" for every one; the container addresses to send it to)."""
    if value == "":
        return "", [container_ip, *([container_ip6] if container_ip6 else [])]
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise errors.Invalid(f"invalid host IP address for a published port: {value!r}") from None
    host_ip = "" if addr.is_unspecified else str(addr)
    if addr.version == 4:
        return host_ip, [container_ip]
    if not container_ip6:
        raise errors.Invalid(f"invalid host IP address for a published port: {value!r} "
                             f"(IPv6, and the network has no IPv6)")
    if addr.is_loopback:  # IPv6 has no route_localnet: a DNAT'd ::1 packet is dropped
        raise errors.Invalid(f"invalid host IP address for a published port: {value!r} (the kernel does not "
                             f"forward IPv6 loopback traffic to a container: publish on :: or a host address)")
    return host_ip, [container_ip6]


def _span(low: int, end: int, what: str) -> tuple[int, int]:
    high = end or low
    if not (0 <= low <= 65535 and 0 <= high <= 65535) or high < low:
        raise errors.Invalid(f"invalid {what} port range: {low}-{high}")
    return low, high


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for automatically chosen ports, which -P picks from as Docker does."""
    with open(_PORT_RANGE_FILE) as f:
        low, high = f.read().split()
    return int(low), int(high)


def resolve(container_ip: str, ports: Iterable[PortMapping], free: Callable[[Binding], bool],
            container_ip6: str = "") -> list[Binding]:
    """The bindings ``ports`` ask for (on every host address: IPv4, and IPv6 too when the
    container has ``container_ip6``); a host port of 0, or a host range for one container
    port, takes the first port for which ``free`` says yes for each family (Docker's picking rules)."""
    out: list[Binding] = []
    for p in ports:
        if p.proto not in PROTOS:
            raise errors.Invalid(f"invalid proto: {p.proto}")
        host_ip, targets = _targets(p.host_ip, container_ip, container_ip6)
        c_low, c_high = _span(p.container_port, p.container_port_end, "container")
        if c_low == 0:
            raise errors.Invalid("invalid container port: 0")
        h_low, h_high = _span(p.host_port, p.host_port_end, "host")
        count = c_high - c_low + 1
        if h_low == 0:  # each container port gets an ephemeral host port of its own
            low, high = ephemeral_range()
            candidates = range(low, high + 1)
            for c in range(c_low, c_high + 1):
                out += _pick(host_ip, p.proto, candidates, targets, c, free, out)
        elif h_high - h_low + 1 == count:
            out += [Binding(p.proto, host_ip, h_low, h_high, target, c_low) for target in targets]
        elif count == 1:  # -p 8000-8010:80: one free port of the host range
            out += _pick(host_ip, p.proto, range(h_low, h_high + 1), targets, c_low, free, out)
        else:
            raise errors.Invalid(f"invalid ranges specified for container and host ports: "
                                 f"{c_low}-{c_high} and {h_low}-{h_high}")
    return out


def _pick(host_ip: str, proto: str, candidates: range, targets: list[str], container_port: int,
          free: Callable[[Binding], bool], taken: list[Binding]) -> list[Binding]:
    """The bindings to ``targets`` of the first candidate host port free for all of them."""
    for port in candidates:
        bindings = [Binding(proto, host_ip, port, port, target, container_port) for target in targets]
        if all(free(b) and not any(b.overlaps(t) for t in taken) for b in bindings):
            return bindings
    first, last = candidates[0], candidates[-1]
    shown = Binding(proto, host_ip, first, last, targets[0], container_port).shown(first)
    raise PortAllocated(f"Bind for {shown}-{last} failed: port is already allocated")


def first_conflict(wanted: Binding, held: Iterable[Binding]) -> int | None:
    """The first host port of ``wanted`` that a binding in ``held`` holds, or None."""
    ports = [max(wanted.host_low, h.host_low) for h in held if wanted.overlaps(h)]
    return min(ports) if ports else None


def allocated(wanted: Binding, port: int) -> PortAllocated:
    return PortAllocated(f"Bind for {wanted.shown(port)} failed: port is already allocated")


class Listeners:
    """The host ports that sockets of this network namespace hold. A few ports are tried by
    binding each (and letting go: about 20 us a port); for more, /proc's socket tables are
    read once (a few ms, as they list every socket of the host): TCP listeners and bound UDP
    sockets, IPv4 and IPv6 (a socket on [::] holds the IPv4 port too)."""

    _FILES = {"tcp": ("tcp", "tcp6"), "udp": ("udp", "udp6")}
    _LISTEN = "0A"

    def __init__(self) -> None:
        self._held: dict[tuple[str, int], dict[int, set[str]]] = {}

    def _table(self, proto: str, family: int) -> dict[int, set[str]]:
        """port -> the addresses of ``family`` holding it ("" = every address) for ``proto``."""
        if (proto, family) not in self._held:
            held: dict[int, set[str]] = {}
            for name in self._FILES[proto]:
                try:
                    with open(f"/proc/thread-self/net/{name}") as f:
                        lines = f.read().splitlines()[1:]
                except FileNotFoundError:
                    continue  # no IPv6 in this kernel
                for line in lines:
                    fields = line.split()
                    if proto == "tcp" and fields[3] != self._LISTEN:
                        continue
                    address, _, port = fields[1].partition(":")
                    ip = _proc_address(address, family)
                    if ip is not None:
                        held.setdefault(int(port, 16), set()).add(ip)
            self._held[(proto, family)] = held
        return self._held[(proto, family)]

    def first(self, b: Binding) -> int | None:
        """The first host port of ``b`` a socket on this host holds, or None."""
        if b.proto == "sctp" or b.host_high - b.host_low < _BIND_AT_MOST:
            return _first_bound(b)
        held = self._table(b.proto, b.family)
        taken = [port for port, addresses in held.items() if b.host_low <= port <= b.host_high
                 and (not b.host_ip or "" in addresses or b.host_ip in addresses)]
        return min(taken) if taken else None


def _proc_address(hex_address: str, family: int = 4) -> str | None:
    """An address of /proc/net/{tcp,udp}[6] as an address of ``family``, "" for any, None for
    one that holds no port of that family (an IPv4 socket holds no IPv6 port; an IPv6 one
    holds an IPv4 port only on :: or a v4-mapped address)."""
    raw = bytes.fromhex(hex_address)
    # the kernel prints each 32-bit word in host order (little-endian here)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    if words == bytes(len(words)):
        return "" if family == 4 or len(words) == 16 else None
    mapped = len(words) == 16 and words[:12] == bytes(10) + b"\xff\xff"
    if family == 6:
        return socket.inet_ntop(socket.AF_INET6, words) if len(words) == 16 and not mapped else None
    if len(words) == 4:
        return socket.inet_ntoa(words)
    if mapped:
        return socket.inet_ntoa(words[12:])
    return None


def _first_bound(b: Binding) -> int | None:
    """The first port of ``b`` that binding a socket to (and letting go) finds taken."""
    kind, proto = {"tcp": (socket.SOCK_STREAM, 0), "udp": (socket.SOCK_DGRAM, 0),
                   "sctp": (socket.SOCK_STREAM, _SCTP)}[b.proto]
    family = socket.AF_INET6 if b.family == 6 else socket.AF_INET
    for port in range(b.host_low, b.host_high + 1):
        try:
            s = socket.socket(family, kind, proto)
        except OSError as e:
            if e.errno in (errno.EPROTONOSUPPORT, errno.ESOCKTNOSUPPORT, errno.EAFNOSUPPORT):
                return None  # no SCTP (or IPv6) in this kernel: nothing can listen on it
            raise
        with s:
            if kind == socket.SOCK_STREAM:
                # a connection in TIME_WAIT does not hold the port; a listener does
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # the IPv6 port only: the IPv4 one is checked on its own
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                s.bind((b.host_ip or _ANY[b.family], port))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    return port
                if e.errno == errno.EADDRNOTAVAIL:
                    raise errors.Invalid(f"host IP address {b.host_ip} of a published port is not "
                                         f"an address of this host") from None
                raise
    return None


def in_use(b: Binding, port: int) -> PortInUse:
    container_port = b.container_low + port - b.host_low
    return PortInUse(f"failed to bind host port for {b.shown(port)}:{b.container_ip}:{container_port}/{b.proto}: "
                     f"address already in use")

