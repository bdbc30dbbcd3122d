"""The rtnetlink requests that change links, addresses and routes, encoded with struct on a
plain socket.

A bridge, a veth pair, hairpin on a bridge port, an address, a link up or deleted, a default
route (IPv4 or IPv6): each is one request and one acknowledgement, ~0.1 ms here. pyroute2 (which the
driver uses only to read: links, the host's routes and addresses) costs ~1 ms a request
through its asyncio machinery and ~2 ms to open a socket; on the path every ``run`` takes,
that would be most of the time. A socket belongs to the network namespace of the thread that
made it (``netns.run_in`` makes one inside a container's namespace).
"""
from __future__ import annotations

import ipaddress
import os
import socket
import struct
import threading

NETLINK_ROUTE = 0
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
RTM_NEWLINK, RTM_DELLINK, RTM_SETLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 17, 19, 20, 24
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_PROTINFO, IFLA_LINKINFO, IFLA_NET_NS_FD = 1, 3, 4, 10, 12, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFLA_BRPORT_MODE = 4  # hairpin
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFA_F_NODAD = 0x02
RTA_OIF, RTA_GATEWAY = 4, 5
NLA_F_NESTED = 0x8000
IFF_UP = 0x1
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 3, 0, 1

_HEADER = struct.Struct("=IHHII")     # nlmsghdr: len, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")    # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")     # ifaddrmsg: family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _nested(kind: int, *attrs: bytes) -> bytes:
    return _attr(kind | NLA_F_NESTED, b"".join(attrs))


def _name(ifname: str) -> bytes:
    return ifname.encode() + b"\0"


def _mac(mac: str) -> bytes:
    return bytes(int(part, 16) for part in mac.split(":"))


def _ifinfo(index: int = 0, flags: int = 0, change: int = 0, family: int = socket.AF_UNSPEC) -> bytes:
    return _IFINFO.pack(family, 0, index, flags, change)


class Socket:
    """One rtnetlink socket, in the namespace of the thread that opens it; a request at a time."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0
        self.lock = threading.Lock()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Socket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, kind: int, flags: int, body: bytes, what: str) -> None:
        """Send one request and wait for its acknowledgement; a refusal raises OSError(errno, what)."""
        with self.lock:
            self.seq += 1
            seq = self.seq
            self.sock.send(_HEADER.pack(_HEADER.size + len(body), kind, flags | NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body)
            while True:
                data = self.sock.recv(65536)
                offset = 0
                while offset + _HEADER.size <= len(data):
                    length, msg_type, _, msg_seq, _ = _HEADER.unpack_from(data, offset)
                    if msg_type == NLMSG_ERROR and msg_seq == seq:
                        code = -struct.unpack_from("=i", data, offset + _HEADER.size)[0]
                        if code:
                            raise OSError(code, f"{what}: {os.strerror(code)}")
                        return
                    offset += (length + 3) & ~3

    # ------------------------------------------------------------ requests
    def add_veth(self, ifname: str, peer: str, *, peer_netns_fd: int, peer_mac: str, master: int,
                 mtu: int = 0) -> None:
        """A veth pair: ``ifname`` here, up, on bridge ``master``; ``peer`` made directly in the
        namespace ``peer_netns_fd`` with ``peer_mac``; both with ``mtu`` (0: the kernel's)."""
        mtu_attr = _attr(IFLA_MTU, struct.pack("=I", mtu)) if mtu else b""
        peer_info = _ifinfo() + _attr(IFLA_IFNAME, _name(peer)) + _attr(IFLA_ADDRESS, _mac(peer_mac)) \
            + _attr(IFLA_NET_NS_FD, struct.pack("=I", peer_netns_fd)) + mtu_attr
        body = _ifinfo(flags=IFF_UP, change=IFF_UP) + _attr(IFLA_IFNAME, _name(ifname)) + mtu_attr \
            + _attr(IFLA_MASTER, struct.pack("=I", master)) \
            + _nested(IFLA_LINKINFO, _attr(IFLA_INFO_KIND, b"veth"),
                      _nested(IFLA_INFO_DATA, _nested(VETH_INFO_PEER, peer_info)))
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"create veth {ifname}")

    def add_bridge(self, ifname: str) -> None:
        body = _ifinfo() + _attr(IFLA_IFNAME, _name(ifname)) + _nested(IFLA_LINKINFO, _attr(IFLA_INFO_KIND, b"bridge"))
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"create bridge {ifname}")

    def set_hairpin(self, index: int, ifname: str) -> None:
        body = _ifinfo(index, family=socket.AF_BRIDGE) \
            + _nested(IFLA_PROTINFO, _attr(IFLA_BRPORT_MODE, b"\x01"))
        self.request(RTM_SETLINK, 0, body, f"set hairpin on {ifname}")

    def set_up(self, index: int, ifname: str) -> None:
        self.request(RTM_NEWLINK, 0, _ifinfo(index, IFF_UP, IFF_UP), f"set {ifname} up")

    def delete_link(self, index: int, ifname: str) -> None:
        self.request(RTM_DELLINK, 0, _ifinfo(index), f"delete link {ifname}")

    def add_address(self, index: int, ifname: str, ip: str, prefixlen: int) -> None:
        """An IPv4 or IPv6 address; an IPv6 one without duplicate address detection (nodad):
        sampan's IPAM hands it out, and DAD would keep it unusable ("tentative") for a second."""
        addr = ipaddress.ip_address(ip)
        family, flags = (socket.AF_INET, 0) if addr.version == 4 else (socket.AF_INET6, IFA_F_NODAD)
        body = _IFADDR.pack(family, prefixlen, flags, RT_SCOPE_UNIVERSE, index) \
            + _attr(IFA_LOCAL, addr.packed) + _attr(IFA_ADDRESS, addr.packed)
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body, f"add address {ip}/{prefixlen} to {ifname}")

    def add_default_route(self, index: int, gateway: str) -> None:
        """The default route (IPv4 or IPv6, as ``gateway`` is) via ``gateway`` on link ``index``."""
        addr = ipaddress.ip_address(gateway)
        family = socket.AF_INET if addr.version == 4 else socket.AF_INET6
        body = _RTMSG.pack(family, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0) \
            + _attr(RTA_GATEWAY, addr.packed) + _attr(RTA_OIF, struct.pack("=I", index))
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body, f"add default route via {gateway}")

def index_of(ifname: str) -> int | None:
    """A link's index in the calling thread's namespace (if_nametoindex: an ioctl), or None."""
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        return None
