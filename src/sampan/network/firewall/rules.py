"""sampan's nftables table as libnftables JSON: the fixed skeleton, made once in one batch,
and the set and map elements that networks and published ports add and remove.

Per network and per container only elements change, never rules: a network is its bridge in
``bridges`` (and ``internal``, or its subnet in ``egress``); a published port (or a range of
1,000) is one element of ``port_addr`` (where host and container ports are equal), or per
port one of ``port_addr`` and one of ``port_num`` (where they differ). Each element carries
the network name or the container id as its comment, so the kernel's ruleset alone says what
belongs to whom (a restarted daemon reads it back).

    prerouting, output (nat, dstnat): fib daddr type local -> published
    published: l4proto . daddr . dport in port_num -> dnat to port_addr : port_num
               l4proto . daddr . dport in port_addr -> dnat to port_addr (the port kept)
    postrouting (nat, srcnat): from an egress subnet out of a non-sampan link -> masquerade;
               127.0.0.0/8 out of a bridge (host -> 127.0.0.1:published) -> masquerade;
               DNAT'd from an egress subnet into a bridge (hairpin) -> masquerade, so that the
               answer comes back through the host (POSTROUTING has no input link to match)
    forward (filter): same bridge -> accept; from or to an internal bridge -> drop;
               DNAT'd into a bridge -> accept; bridge to another bridge -> drop (isolation);
               into a bridge: established/related -> accept, anything else -> drop

IPv6 networks get the same in ``table ip6 sampan`` (``skeleton("ip6")``: IPv6 addresses in
the sets and maps, no 127.0.0.0/8 rule: IPv6 has no route_localnet, so ::1 is not DNAT'd out
of the host, as with dockerd without its userland proxy). Two tables rather than one
``inet``: the IPv4 table stays as it was, and each is made and deleted with its own users.
"""
from __future__ import annotations

from typing import Any

FAMILIES = ("ip", "ip6")
TABLE = "sampan"
PROTOS = ("tcp", "udp", "sctp")

BRIDGES = "bridges"        # ifname: every sampan bridge
INTERNAL = "internal"      # ifname: bridges of --internal networks
SAME_BRIDGE = "same_bridge"  # ifname . ifname: (bridge, bridge), traffic that stays on one bridge
EGRESS = "egress"          # address interval: subnets of networks with egress (masqueraded)
PORT_ADDR = "port_addr"    # l4proto . host address . host port (intervals) -> container address
PORT_NUM = "port_num"      # the same key -> container port, where it differs from the host port
PUBLISHED = "published"

Json = dict[str, Any]


_ADDR_TYPE = {"ip": "ipv4_addr", "ip6": "ipv6_addr"}
_ANY = {"ip": "0.0.0.0", "ip6": "::"}


def _obj(kind: str, family: str, **fields: Any) -> Json:
    return {kind: {"family": family, "table": TABLE, **fields}}


def _meta(key: str) -> Json:
    return {"meta": {"key": key}}


def _match(left: Any, right: Any, op: str = "==") -> Json:
    return {"match": {"op": op, "left": left, "right": right}}


def _address(family: str, field: str) -> Json:
    return {"payload": {"protocol": family, "field": field}}


def _port_key(family: str) -> Json:
    return {"concat": [_meta("l4proto"), _address(family, "daddr"), {"payload": {"protocol": "th", "field": "dport"}}]}


def _lookup(family: str, map_name: str) -> Json:
    return {"map": {"key": _port_key(family), "data": f"@{map_name}"}}


def _rule(family: str, chain: str, *expr: Json) -> Json:
    return {"add": _obj("rule", family, chain=chain, expr=list(expr))}


def _base_chain(family: str, name: str, kind: str, hook: str, prio: int) -> Json:
    return {"add": _obj("chain", family, name=name, type=kind, hook=hook, prio=prio, policy="accept")}


_ACCEPT: Json = {"accept": None}
_DROP: Json = {"drop": None}
_MASQUERADE: Json = {"masquerade": None}
_L4 = _match(_meta("l4proto"), {"set": list(PROTOS)})


def skeleton(family: str) -> list[Json]:
    """The commands that make the ``family`` ("ip" or "ip6") table with its sets, maps, chains and rules."""
    addr = _ADDR_TYPE[family]
    port_key_type = ["inet_proto", addr, "inet_service"]
    local = _match({"fib": {"result": "type", "flags": ["daddr"]}}, "local")
    to_bridge = _match(_meta("oifname"), f"@{BRIDGES}")
    from_bridge = _match(_meta("iifname"), f"@{BRIDGES}")
    dnatted = _match({"ct": {"key": "status"}}, "dnat", op="in")
    from_egress = _match(_address(family, "saddr"), f"@{EGRESS}")
    loopback = [] if family == "ip6" else [  # no route_localnet in IPv6: see above
        _rule(family, "postrouting", to_bridge,
              _match(_address(family, "saddr"), {"prefix": {"addr": "127.0.0.0", "len": 8}}), _MASQUERADE)]
    return [
        {"add": {"table": {"family": family, "name": TABLE}}},
        {"add": _obj("set", family, name=BRIDGES, type="ifname")},
        {"add": _obj("set", family, name=INTERNAL, type="ifname")},
        {"add": _obj("set", family, name=SAME_BRIDGE, type=["ifname", "ifname"])},
        {"add": _obj("set", family, name=EGRESS, type=addr, flags=["interval"])},
        {"add": _obj("map", family, name=PORT_ADDR, type=port_key_type, map=addr, flags=["interval"])},
        {"add": _obj("map", family, name=PORT_NUM, type=port_key_type, map="inet_service", flags=["interval"])},
        {"add": _obj("chain", family, name=PUBLISHED)},
        _base_chain(family, "prerouting", "nat", "prerouting", -100),
        _base_chain(family, "output", "nat", "output", -100),
        _base_chain(family, "postrouting", "nat", "postrouting", 100),
        _base_chain(family, "forward", "filter", "forward", 0),
        _rule(family, "prerouting", local, {"jump": {"target": PUBLISHED}}),
        _rule(family, "output", local, {"jump": {"target": PUBLISHED}}),
        _rule(family, PUBLISHED, _L4, {"dnat": {"family": family, "addr": _lookup(family, PORT_ADDR),
                                                "port": _lookup(family, PORT_NUM)}}),
        _rule(family, PUBLISHED, _L4, {"dnat": {"family": family, "addr": _lookup(family, PORT_ADDR)}}),
        _rule(family, "postrouting", from_egress, _match(_meta("oifname"), f"@{BRIDGES}", op="!="), _MASQUERADE),
        *loopback,
        _rule(family, "postrouting", from_egress, to_bridge, dnatted, _MASQUERADE),
        _rule(family, "forward", _match({"concat": [_meta("iifname"), _meta("oifname")]}, f"@{SAME_BRIDGE}"), _ACCEPT),
        _rule(family, "forward", _match(_meta("iifname"), f"@{INTERNAL}"), _DROP),
        _rule(family, "forward", _match(_meta("oifname"), f"@{INTERNAL}"), _DROP),
        _rule(family, "forward", to_bridge, dnatted, _ACCEPT),
        _rule(family, "forward", from_bridge, to_bridge, _DROP),
        _rule(family, "forward", to_bridge, _match({"ct": {"key": "state"}}, ["established", "related"], op="in"),
              _ACCEPT),
        _rule(family, "forward", to_bridge, _DROP),
    ]


def list_table(family: str) -> Json:
    return {"list": {"table": {"family": family, "name": TABLE}}}


def delete_table(family: str) -> Json:
    return {"delete": {"table": {"family": family, "name": TABLE}}}


def element(op: str, family: str, set_name: str, items: list[Any]) -> Json:
    """``op`` ("add" or "delete") the elements ``items`` of a set or map of the ``family`` table."""
    return {op: _obj("element", family, name=set_name, elem=items)}


def tagged(value: Any, comment: str) -> Json:
    """A set element (or a map element's key) carrying its owner as the comment."""
    return {"elem": {"val": value, "comment": comment}}


def untag(item: Any) -> tuple[Any, str]:
    """(value, comment) of an element as a listing shows it."""
    if isinstance(item, dict) and "elem" in item:
        return item["elem"]["val"], item["elem"].get("comment", "")
    return item, ""


def port_key(family: str, proto: str, host_ip: str, low: int, high: int) -> Json:
    """The key of host ``host_ip`` ("" = every address of ``family``) ports low..high of ``proto``."""
    address: Any = host_ip or {"prefix": {"addr": _ANY[family], "len": 0}}
    return {"concat": [proto, address, low if low == high else {"range": [low, high]}]}
