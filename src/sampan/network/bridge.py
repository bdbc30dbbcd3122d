"""The bridge driver: a Linux bridge per network and a veth pair per endpoint, through netlink
(pyroute2) in this process; no `ip` subprocess.

The driver works in the network namespace of the thread that made it (the host's, in
sampand), and is used from threads of that namespace. Every change goes through
netlink.Socket (~10x cheaper a request than pyroute2); pyroute2 only reads (a link's kind,
addresses, the host's routes), off the per-container path. The container side
is configured through a socket opened by a thread that joined the container's namespace
(``netns.run_in``): pyroute2's own ``netns=`` forks a helper process per socket.

Every step of a setup has its undo: a failure at step k removes what steps < k made, and
never what this call did not make (a link of the same name that was already there).
Teardown is idempotent: a link or namespace already gone is not an error.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import socket
import threading
from typing import Callable

from pyroute2 import IPRoute

from . import netlink, netns
from .api import NetworkError

IFNAMSIZ = 15  # the kernel's limit on a link's name, without the NUL


class BridgeDriver:
    """Bridges and veth pairs in the namespace of the thread that makes it."""

    def __init__(self) -> None:
        self.ipr = IPRoute()          # reads: links, routes, addresses
        self.nl = netlink.Socket()    # every change
        self.lock = threading.Lock()  # one pyroute2 socket: one request at a time

    def close(self) -> None:
        self.ipr.close()
        self.nl.close()

    @staticmethod
    def link_exists(ifname: str) -> bool:
        return netlink.index_of(ifname) is not None

    # -------------------------------------------------------------------- host
    def host_subnets(self, version: int = 4) -> list[ipaddress.IPv4Network] | list[ipaddress.IPv6Network]:
        """What the host's routes (every table) and addresses of that IP ``version`` cover: a new
        network must not overlap. The default route is left out (it covers everything)."""
        family = socket.AF_INET if version == 4 else socket.AF_INET6
        out: set = set()
        with self.lock:
            routes = self.ipr.get_routes(family=family)  # every table
            addrs = self.ipr.get_addr(family=family)
        for r in routes:
            dst, length = r.get_attr("RTA_DST"), r["dst_len"]
            if dst and length:
                out.add(ipaddress.ip_network(f"{dst}/{length}", strict=False))
        for a in addrs:
            out.add(ipaddress.ip_network(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}", strict=False))
        return sorted(out)

    @staticmethod
    def enable_forwarding(ipv6: bool = False) -> None:
        """net.ipv4.ip_forward=1 (and with ``ipv6`` net.ipv6.conf.all.forwarding=1) in this
        thread's namespace (/proc/sys/net follows the calling thread's namespace), left on as
        Docker leaves them."""
        _sysctl("/proc/sys/net/ipv4/ip_forward", "1")
        if ipv6:
            _sysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1")

    # ----------------------------------------------------------------- bridges
    def ensure_bridge(self, name: str, gateway: str, prefixlen: int, gateway6: str = "", prefixlen6: int = 0) -> None:
        """The bridge ``name``, up, with the gateway address (and ``gateway6``, an IPv6
        network's); made if missing, and removed again if a later step fails. A bridge that
        exists is completed, never re-made."""
        if len(name) > IFNAMSIZ:
            raise NetworkError(f"bridge name {name} is longer than {IFNAMSIZ} characters")
        index = netlink.index_of(name)
        made = index is None
        if made:
            _kernel(lambda: self.nl.add_bridge(name))
            index = netlink.index_of(name)
        try:
            if index is None:
                raise NetworkError(f"bridge {name} vanished while it was set up")
            with self.lock:
                link = self.ipr.get_links(index)[0]
                have = {(str(ipaddress.ip_address(a.get_attr("IFA_ADDRESS"))), a["prefixlen"])
                        for family in ((socket.AF_INET, socket.AF_INET6) if gateway6 else (socket.AF_INET,))
                        for a in self.ipr.get_addr(family=family, index=index)}
            kind = link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
            if kind != "bridge":
                raise NetworkError(f"link {name} exists and is not a bridge ({kind or 'no kind'})")
            if (gateway, prefixlen) not in have:
                _kernel(lambda: self.nl.add_address(index, name, gateway, prefixlen))
            if gateway6:
                _ipv6_on(name)  # a host whose default is disable_ipv6=1 made the bridge without it
                # No DAD for the link-local address the bridge gets with its first port: while
                # it is tentative (1-2 s) the host cannot solicit a neighbour for a packet whose
                # source is not the bridge's (a published port's DNAT from a host address).
                _sysctl(f"/proc/sys/net/ipv6/conf/{name}/accept_dad", "0")
                if (gateway6, prefixlen6) not in have:
                    _kernel(lambda: self.nl.add_address(index, name, gateway6, prefixlen6))
            _kernel(lambda: self.nl.set_up(index, name))
        except BaseException:
            if made:
                self.remove_bridge(name)
            raise

    def remove_bridge(self, name: str) -> None:
        """Delete a bridge; one already gone is fine."""
        self._delete(name)

    def _delete(self, ifname: str) -> None:
        """Delete a link (a veth's peer goes with it); one already gone is fine."""
        index = netlink.index_of(ifname)
        if index is None:
            return
        try:
            self.nl.delete_link(index, ifname)
        except OSError as e:
            if e.errno not in (errno.ENODEV, errno.ENOENT):
                raise NetworkError(e.strerror) from e

    # --------------------------------------------------------------- endpoints
    def attach(self, *, netns_path: str, bridge: str, host_ifname: str, ifname: str, ip: str,
               prefixlen: int, gateway: str, mac: str, mtu: int = 0, ip6: str = "", prefixlen6: int = 0,
               gateway6: str = "") -> None:
        """A veth pair: ``host_ifname`` on the bridge (up, hairpin), its peer made directly in
        the namespace as ``ifname`` with ``mac``, ``ip``/``prefixlen``, up, and a default route
        via ``gateway`` (none when ``gateway`` is ""); both ends with ``mtu`` (0: the kernel's).
        With ``ip6`` (an IPv6 network) the peer has IPv6 on, without DAD, ``ip6``/``prefixlen6``
        and a default IPv6 route via ``gateway6`` (if not ""); without, IPv6 off (as Docker)."""
        if len(host_ifname) > IFNAMSIZ or len(ifname) > IFNAMSIZ:
            raise NetworkError(f"link name {host_ifname if len(host_ifname) > IFNAMSIZ else ifname} is longer "
                               f"than {IFNAMSIZ} characters")
        master = netlink.index_of(bridge)
        if master is None:
            raise NetworkError(f"bridge {bridge} does not exist")
        fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _kernel(lambda: self.nl.add_veth(host_ifname, ifname, peer_netns_fd=fd, peer_mac=mac, master=master,
                                                 mtu=mtu))
        finally:
            os.close(fd)
        try:
            index = netlink.index_of(host_ifname)
            if index is None:
                raise NetworkError(f"veth {host_ifname} vanished while it was set up")
            _kernel(lambda: self.nl.set_hairpin(index, host_ifname))
            netns.run_in(netns_path, lambda: _configure_inside(ifname, ip, prefixlen, gateway, ip6, prefixlen6,
                                                               gateway6))
        except BaseException:
            self.detach(host_ifname)
            raise

    def detach(self, host_ifname: str) -> None:
        """Remove an endpoint's veth pair (its peer goes with it); one already gone is fine."""
        self._delete(host_ifname)


def _kernel(call: Callable[[], None]) -> None:
    """A netlink.Socket request; its refusal (OSError with the step in the message) as a NetworkError."""
    try:
        call()
    except OSError as e:
        raise NetworkError(e.strerror) from e


def _configure_inside(ifname: str, ip: str, prefixlen: int, gateway: str, ip6: str, prefixlen6: int,
                      gateway6: str) -> None:
    """In the container's namespace (a thread that joined it): addresses, up, default routes."""
    index = netlink.index_of(ifname)
    if index is None:
        raise NetworkError(f"{ifname} is missing in the container's network namespace")
    if ip6:
        _ipv6_on(ifname)
        # before the link is up: its link-local address usable at once too
        _sysctl(f"/proc/sys/net/ipv6/conf/{ifname}/accept_dad", "0")
    else:
        _disable_ipv6(ifname)
    with netlink.Socket() as nl:
        _kernel(lambda: nl.add_address(index, ifname, ip, prefixlen))
        if ip6:
            _kernel(lambda: nl.add_address(index, ifname, ip6, prefixlen6))
        _kernel(lambda: nl.set_up(index, ifname))
        if gateway:
            _kernel(lambda: nl.add_default_route(index, gateway))
        if gateway6:
            _kernel(lambda: nl.add_default_route(index, gateway6))


def _sysctl(path: str, value: str) -> None:
    """Write a /proc/sys value (of the calling thread's network namespace) unless it has it."""
    with open(path, "r+") as f:
        if f.read().strip() != value:
            f.seek(0)
            f.write(value)


def _ipv6_on(ifname: str) -> None:
    try:
        _sysctl(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6", "0")
    except FileNotFoundError:
        raise NetworkError(f"IPv6 on {ifname}: this kernel has no IPv6") from None


def _disable_ipv6(ifname: str) -> None:
    """No IPv6 on an IPv4 network's interface (no link-local address, no DAD), as Docker 26+
    does; before the link is up. A kernel without IPv6 has nothing to turn off."""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6", "w") as f:
            f.write("1")
    except FileNotFoundError:
        pass
