"""The network layer's facade: networks, sandboxes (network namespaces) and endpoints.

The engine calls it from the warm daemon: ``create_network``/``remove_network``/``networks``,
``create_sandbox``/``remove_sandbox`` (the netns a container joins: the OCI spec gets
``{"type": "network", "path": ...}``), ``connect``/``disconnect`` (an endpoint: address,
veth, published ports), and ``restore`` at daemon start (bridges and firewall re-made after
a reboot, endpoints and namespaces of containers that are gone removed).

Each operation is transactional: the database row comes first (so a crash leaves a record
that ``restore`` finds), then the kernel steps, then the firewall; a failure undoes the
steps before it, in reverse.
"""
from __future__ import annotations

import ipaddress
import os
import re
import secrets
import threading
import time
from dataclasses import replace
from typing import Iterable

from . import netns
from .api import AddressInUse, Endpoint, Firewall, InvalidNetworkConfig, Network, PortMapping
from .bridge import IFNAMSIZ, BridgeDriver
from .ipam import Ipam, check_gateway, check_ip_range, parse_subnet, pick_subnet, pick_subnet6
from ..errors import NotFound

DEFAULT_NETWORK = "bridge"      # Docker's name for the default network
DEFAULT_BRIDGE = "sampan0"      # its host link (docker0 is dockerd's)
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"
MTU_OPTION = "com.docker.network.driver.mtu"
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_MAC = re.compile(r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$")


class NetworkNotFound(NotFound):
    pass


def _mtu(options: dict[str, str]) -> int:
    """The network's MTU option (0: not set, the kernel's 1500)."""
    text = options.get(MTU_OPTION, "")
    if not text:
        return 0
    if not text.isdigit() or not 68 <= int(text) <= 65535:
        raise InvalidNetworkConfig(f"invalid MTU {text}: it must be a number from 68 to 65535")
    return int(text)


def host_ifname() -> str:
    """A veth's host side: "veth" and 7 random hex digits, as Docker names them. Random, not
    derived from the endpoint: a pair whose namespace was just removed may still be on its
    way out of the kernel when the same container connects again."""
    return "veth" + secrets.token_hex(4)[:7]


class Manager:
    def __init__(self, ipam: Ipam, exec_root: str, firewall: Firewall, driver: BridgeDriver | None = None) -> None:
        self.ipam = ipam
        self.netns_dir = os.path.join(exec_root, "netns")
        self.firewall = firewall
        self.driver = driver or BridgeDriver()
        self.lock = threading.RLock()  # subnet choice and network create/remove, one at a time

    def close(self) -> None:
        self.driver.close()

    # --------------------------------------------------------------- sandboxes
    def sandbox_path(self, container_id: str) -> str:
        return os.path.join(self.netns_dir, container_id)

    def create_sandbox(self, container_id: str) -> str:
        path = self.sandbox_path(container_id)
        netns.create(path)
        return path

    def remove_sandbox(self, container_id: str) -> None:
        """The container's endpoints released (ports, addresses, records) and its namespace
        removed. Its veth pairs are not deleted one by one: the kernel removes them with the
        namespace, in the background (deleting a link waits for RCU grace periods: ~15 ms
        here, the largest part of a teardown otherwise)."""
        for ep in self.ipam.endpoints(container_id=container_id):
            self._teardown(ep, delete_link=False)
        netns.remove(self.sandbox_path(container_id))

    # ---------------------------------------------------------------- networks
    def networks(self) -> list[Network]:
        return self.ipam.networks()

    def get(self, ref: str) -> Network:
        """A network by name, full id or unique id prefix (Docker's lookup order)."""
        nets = self.ipam.networks()
        for match in (lambda n: n.name == ref, lambda n: n.id == ref):
            found = [n for n in nets if match(n)]
            if found:
                return found[0]
        found = [n for n in nets if ref and n.id.startswith(ref)]
        if len(found) == 1:
            return found[0]
        raise NetworkNotFound(f"network {ref} not found")

    def create_network(self, name: str, *, subnet: str = "", gateway: str = "", ip_range: str = "",
                       internal: bool = False, options: dict[str, str] | None = None,
                       labels: dict[str, str] | None = None, enable_ipv6: bool = False, subnet6: str = "",
                       gateway6: str = "") -> Network:
        """A bridge network; its subnet picked clear of the host's routes and other networks
        when not given. With ``enable_ipv6`` an IPv6 subnet too: ``subnet6``, or a ULA /64
        with a random global id clear of the host's IPv6 routes and other networks; its
        gateway ``gateway6`` or the first address. Nothing is left behind when it fails."""
        if not _NAME.match(name):
            raise InvalidNetworkConfig(f'invalid network name "{name}": it must match [a-zA-Z0-9][a-zA-Z0-9_.-]*')
        if (subnet6 or gateway6) and not enable_ipv6:
            raise InvalidNetworkConfig(f"an IPv6 subnet or gateway needs IPv6 enabled on network {name} (--ipv6)")
        options = dict(options or {})
        network_id = secrets.token_hex(32)
        bridge = options.get(BRIDGE_NAME_OPTION) or (DEFAULT_BRIDGE if name == DEFAULT_NETWORK else f"br-{network_id[:12]}")
        if len(bridge) > IFNAMSIZ or not _NAME.match(bridge):
            raise InvalidNetworkConfig(f"invalid bridge name {bridge}: at most {IFNAMSIZ} of [a-zA-Z0-9_.-]")
        _mtu(options)  # checked now: connect uses it
        with self.lock:
            if subnet:
                net_subnet = parse_subnet(subnet)
            else:
                net_subnet = ipaddress.IPv4Network(pick_subnet([*self.driver.host_subnets(), *self.ipam.subnets()]))
            net_subnet6 = None
            if enable_ipv6:
                net_subnet6 = parse_subnet(subnet6 or pick_subnet6([*self.driver.host_subnets(6),
                                                                    *self.ipam.subnets6()]), 6)
            net = Network(id=network_id, name=name, driver="bridge", bridge=bridge, subnet=str(net_subnet),
                          gateway=check_gateway(net_subnet, gateway), ip_range=check_ip_range(net_subnet, ip_range),
                          internal=internal, options=options, labels=dict(labels or {}), created=time.time(),
                          subnet6=str(net_subnet6) if net_subnet6 else "",
                          gateway6=check_gateway(net_subnet6, gateway6) if net_subnet6 else "")
            if self.driver.link_exists(bridge):
                raise AddressInUse(f"bridge name {bridge} is already in use on the host")
            self.ipam.add_network(net)
            try:
                self._make(net)
            except BaseException:
                self.ipam.remove_network(net.id)
                raise
        return net

    def _make(self, net: Network) -> None:
        """The bridge and its firewall: completed if they exist; a bridge this call made is
        removed again if the firewall fails (which undoes its own part)."""
        self.driver.enable_forwarding(ipv6=net.enable_ipv6)
        made = not self.driver.link_exists(net.bridge)
        self.driver.ensure_bridge(net.bridge, net.gateway, net.prefixlen, net.gateway6, net.prefixlen6)
        try:
            self.firewall.ensure_network(net.name, net.bridge, net.subnet, net.internal, subnet6=net.subnet6)
        except BaseException:
            if made:
                self.driver.remove_bridge(net.bridge)
            raise

    def ensure_default(self, subnet: str = "", gateway: str = "", enable_ipv6: bool = False,
                       subnet6: str = "") -> Network:
        """The default network (``bridge`` on sampan0), made on first use (with an IPv6
        subnet too when ``enable_ipv6``: ``subnet6``, or a ULA /64)."""
        with self.lock:
            try:
                return self.get(DEFAULT_NETWORK)
            except NetworkNotFound:
                return self.create_network(DEFAULT_NETWORK, subnet=subnet, gateway=gateway,
                                           enable_ipv6=enable_ipv6, subnet6=subnet6)

    def remove_network(self, ref: str) -> None:
        """Remove a network without endpoints: its record (refused, in the same transaction,
        while an endpoint is there), then its firewall and bridge."""
        net = self.get(ref)
        with self.lock:
            self.ipam.remove_network(net.id)
            self.firewall.remove_network(net.name)
            self.driver.remove_bridge(net.bridge)

    # --------------------------------------------------------------- endpoints
    def endpoints(self, container_id: str) -> list[Endpoint]:
        return self.ipam.endpoints(container_id=container_id)

    def connect(self, container_id: str, netns_path: str, network: str, *, ip: str = "", mac: str = "",
                aliases: Iterable[str] = (), ports: Iterable[PortMapping] = (), ip6: str = "") -> Endpoint:
        """Attach the container's namespace to a network: an address (``ip`` checked and taken
        if given; on an IPv6 network an IPv6 one too, ``ip6`` likewise), a veth pair (``mac``,
        or Docker's 02:42:<ip>), the default routes (IPv4: on the container's first network
        that is not internal; IPv6: its first such IPv6 network), and ``ports`` published (the
        endpoint records them as the firewall resolved them). All or nothing."""
        net = self.get(network)
        if mac and not _MAC.match(mac):
            raise InvalidNetworkConfig(f"invalid MAC address {mac}")
        existing = self.ipam.endpoints(container_id=container_id)
        taken = {e.ifname for e in existing}
        ifname = next(f"eth{n}" for n in range(len(taken) + 1) if f"eth{n}" not in taken)
        # the default route goes via the first network with a way out, as Docker's gateway endpoint
        internal = {n.id for n in self.ipam.networks() if n.internal}
        routed = not net.internal and all(e.network_id in internal for e in existing)
        routed6 = not net.internal and all(e.network_id in internal or not e.ip6 for e in existing)
        ep = self.ipam.allocate(net, Endpoint(
            container_id=container_id, network_id=net.id, netns=netns_path, ifname=ifname,
            host_ifname=host_ifname(), ip=ip, prefixlen=net.prefixlen, gateway=net.gateway,
            mac=mac, aliases=tuple(aliases), ports=tuple(ports), ip6=ip6))
        try:
            self.driver.attach(netns_path=netns_path, bridge=net.bridge, host_ifname=ep.host_ifname,
                               ifname=ep.ifname, ip=ep.ip, prefixlen=ep.prefixlen,
                               gateway=net.gateway if routed else "", mac=ep.mac, mtu=_mtu(net.options),
                               ip6=ep.ip6, prefixlen6=ep.prefixlen6, gateway6=net.gateway6 if routed6 else "")
            try:
                if ep.ports:
                    published = self.firewall.publish(container_id, ep.ip, net.bridge, list(ep.ports),
                                                      container_ip6=ep.ip6)
                    try:
                        ep = self.ipam.update_endpoint(replace(ep, ports=tuple(published)))
                    except BaseException:
                        self.firewall.unpublish(container_id)
                        raise
            except BaseException:
                self.driver.detach(ep.host_ifname)
                raise
        except BaseException:
            self.ipam.release(net.id, container_id)
            raise
        return ep

    def disconnect(self, container_id: str, network: str) -> None:
        """Undo ``connect``; what is already gone (the namespace, the veth) is fine."""
        net = self.get(network)
        found = self.ipam.endpoints(container_id=container_id, network_id=net.id)
        if not found:
            raise NotFound(f"container {container_id[:12]} is not connected to network {net.name}")
        self._teardown(found[0])

    def _teardown(self, ep: Endpoint, delete_link: bool = True) -> None:
        if ep.ports:
            self.firewall.unpublish(ep.container_id)
        if delete_link:
            self.driver.detach(ep.host_ifname)
        self.ipam.release(ep.network_id, ep.container_id)

    # ----------------------------------------------------------------- restore
    def restore(self, live_containers: Iterable[str]) -> None:
        """At daemon start: every network's bridge and firewall (a reboot removed them), and
        nothing of a container not in ``live_containers`` (a crash or reboot left it)."""
        live = set(live_containers)
        nets = self.ipam.networks()
        with self.lock:
            for net in nets:
                self._make(net)
        for ep in self.ipam.endpoints():
            if ep.container_id not in live:
                # a veth in a namespace of ours goes with it (below), without a link deletion each
                self._teardown(ep, delete_link=os.path.dirname(ep.netns) != self.netns_dir)
        if os.path.isdir(self.netns_dir):
            for name in os.listdir(self.netns_dir):
                if name not in live:
                    netns.remove(os.path.join(self.netns_dir, name))
        self.firewall.cleanup([n.name for n in nets], live)

