"""The bridge driver: a Linux bridge per network and a veth pair per endpoint, through netlink
(pyroute2) in this process; no `ip` subprocess.

The host side works in the network namespace of the thread that made the driver (the host's,
in sampand). The container side is configured through a netlink socket opened by a thread
that joined the container's namespace (``netns.run_in``): pyroute2's own ``netns=`` forks a
helper process per socket, too slow for the run path.

Every step of a setup has its undo: a failure at step k removes what steps < k made, and
never what this call did not make (a link of the same name that was already there).
Teardown is idempotent: a link or namespace already gone is not an error.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import threading
from typing import Any, Callable

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from . import netns
from .api import NetworkError

IFNAMSIZ = 15  # the kernel's limit on a link's name, without the NUL
_HAIRPIN = 1   # IFLA_BRPORT_MODE: a container reaches its own published port through the host


def _step(what: str, call: Callable[[], Any]) -> Any:
    try:
        return call()
    except NetlinkError as e:
        raise NetworkError(f"{what}: {os.strerror(e.code) if e.code > 0 else e}") from e


class BridgeDriver:
    """Bridges and veth pairs in the namespace of the thread that makes it."""

    def __init__(self) -> None:
        self.ipr = IPRoute()
        self.lock = threading.Lock()  # one netlink socket: one request at a time

    def close(self) -> None:
        self.ipr.close()

    def link_exists(self, ifname: str) -> bool:
        with self.lock:
            return self._index(ifname) is not None

    def _index(self, ifname: str) -> int | None:
        found = self.ipr.link_lookup(ifname=ifname)
        return found[0] if found else None

    # -------------------------------------------------------------------- host
    def host_subnets(self) -> list[ipaddress.IPv4Network]:
        """What the host's routes (every table) and addresses cover: a new network must not overlap."""
        out: set[ipaddress.IPv4Network] = set()
        with self.lock:
            routes = self.ipr.get_routes(family=2)  # every table
            addrs = self.ipr.get_addr(family=2)
        for r in routes:
            dst, length = r.get_attr("RTA_DST"), r["dst_len"]
            if dst and length:
                out.add(ipaddress.IPv4Network(f"{dst}/{length}", strict=False))
        for a in addrs:
            out.add(ipaddress.IPv4Network(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}", strict=False))
        return sorted(out)

    @staticmethod
    def enable_forwarding() -> None:
        """net.ipv4.ip_forward=1 in this thread's namespace (/proc/sys/net follows the calling
        thread's namespace), left on as Docker leaves it."""
        with open("/proc/sys/net/ipv4/ip_forward", "r+") as f:
            if f.read().strip() != "1":
                f.seek(0)
                f.write("1")

    # ----------------------------------------------------------------- bridges
    def ensure_bridge(self, name: str, gateway: str, prefixlen: int) -> None:
        """The bridge ``name``, up, with the gateway address; made if missing, and removed
        again if a later step fails. A bridge that exists is completed, never re-made."""
        if len(name) > IFNAMSIZ:
            raise NetworkError(f"bridge name {name} is longer than {IFNAMSIZ} characters")
        with self.lock:
            index = self._index(name)
            made = index is None
            if made:
                _step(f"create bridge {name}", lambda: self.ipr.link("add", ifname=name, kind="bridge"))
                index = self._index(name)
            try:
                link = self.ipr.get_links(index)[0]
                kind = link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
                if kind != "bridge":
                    raise NetworkError(f"link {name} exists and is not a bridge ({kind or 'no kind'})")
                have = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in self.ipr.get_addr(family=2, index=index)}
                if (gateway, prefixlen) not in have:
                    _step(f"add address {gateway}/{prefixlen} to {name}",
                          lambda: self.ipr.addr("add", index=index, address=gateway, prefixlen=prefixlen))
                _step(f"set {name} up", lambda: self.ipr.link("set", index=index, state="up"))
            except BaseException:
                if made:
                    self._delete(name)
                raise

    def remove_bridge(self, name: str) -> None:
        with self.lock:
            self._delete(name)

    def _delete(self, ifname: str) -> None:
        """Delete a link (and a veth's peer with it); one already gone is fine."""
        try:
            self.ipr.link("del", ifname=ifname)
        except NetlinkError as e:
            if e.code not in (errno.ENODEV, errno.ENOENT):
                raise NetworkError(f"delete link {ifname}: {os.strerror(e.code)}") from e

    # --------------------------------------------------------------- endpoints
    def attach(self, *, netns_path: str, bridge: str, host_ifname: str, ifname: str, ip: str,
               prefixlen: int, gateway: str, mac: str) -> None:
        """A veth pair: ``host_ifname`` on the bridge (up, hairpin), its peer made directly in
        the namespace as ``ifname`` with ``mac``, ``ip``/``prefixlen``, up, and a default route
        via ``gateway`` (none when ``gateway`` is "": an internal network)."""
        if len(host_ifname) > IFNAMSIZ or len(ifname) > IFNAMSIZ:
            raise NetworkError(f"link name {host_ifname if len(host_ifname) > IFNAMSIZ else ifname} is longer "
                               f"than {IFNAMSIZ} characters")
        fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            with self.lock:
                master = self._index(bridge)
                if master is None:
                    raise NetworkError(f"bridge {bridge} does not exist")
                _step(f"create veth {host_ifname}", lambda: self.ipr.link(
                    "add", ifname=host_ifname, kind="veth", master=master, state="up",
                    peer={"ifname": ifname, "net_ns_fd": fd, "address": mac}))
        finally:
            os.close(fd)
        try:
            with self.lock:
                index = self._index(host_ifname)
                _step(f"set hairpin on {host_ifname}", lambda: self.ipr.brport("set", index=index, mode=_HAIRPIN))
            netns.run_in(netns_path, lambda: _configure_inside(ifname, ip, prefixlen, gateway))
        except BaseException:
            self.detach(host_ifname)
            raise

    def detach(self, host_ifname: str) -> None:
        """Remove an endpoint's veth pair (its peer goes with it); one already gone is fine."""
        with self.lock:
            self._delete(host_ifname)


def _configure_inside(ifname: str, ip: str, prefixlen: int, gateway: str) -> None:
    """In the container's namespace (a thread that joined it): address, up, default route."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise NetworkError(f"{ifname} is missing in the container's network namespace")
        index = found[0]
        _step(f"add address {ip}/{prefixlen} to {ifname}",
              lambda: ipr.addr("add", index=index, address=ip, prefixlen=prefixlen))
        _step(f"set {ifname} up", lambda: ipr.link("set", index=index, state="up"))
        if gateway:
            _step(f"add default route via {gateway}",
                  lambda: ipr.route("add", dst="0.0.0.0/0", gateway=gateway, oif=index))
