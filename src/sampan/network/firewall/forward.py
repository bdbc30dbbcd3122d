"""Coexistence with a FORWARD policy of DROP in iptables' own table (dockerd sets one).

In nftables an accept ends only the base chain it is in: a packet sampan's ``forward`` chain
accepts still meets ``table ip filter``'s FORWARD chain at the same hook, and its DROP policy.
Where that chain exists (iptables-nft, as dockerd and ufw use it), sampan adds one rule of its
own at its end, ``-m comment --comment sampan -j SAMPAN-FORWARD``, and a chain of its own
holding ``-i BRIDGE -j ACCEPT`` and ``-o BRIDGE -j ACCEPT`` per network (what may not pass was
already dropped in sampan's table). Appended, the jump comes after everyone else's rules, so
it overrides the policy only: DOCKER-USER, Docker's isolation and an admin's own drops still
apply first. The rules use only what iptables-nft reads back (``iptables -S`` and ``-C`` show
them as iptables rules), so dockerd's own iptables calls keep working on the table. The chain
and the jump go when the last network does; nothing else in the table is touched. IPv6
networks get the same in ``table ip6 filter`` (ip6tables-nft's, where dockerd sets a DROP
policy too), going with the last IPv6 network.
"""
from __future__ import annotations

from typing import Any

from .nftables import Nftables, NftablesError

TABLE = "filter"
FORWARD = "FORWARD"
CHAIN = "SAMPAN-FORWARD"
JUMP_COMMENT = "sampan"

Json = dict[str, Any]


def _chain_rules(nft: Nftables, family: str, chain: str) -> list[Json] | None:
    """The rules of ``<family> filter`` ``chain``, or None if the table or chain does not exist."""
    try:
        items = nft.run([{"list": {"chain": {"family": family, "table": TABLE, "name": chain}}}])
    except NftablesError:
        return None
    return [item["rule"] for item in items if "rule" in item]


def _rule(family: str, chain: str, expr: list[Json], comment: str) -> Json:
    return {"family": family, "table": TABLE, "chain": chain, "expr": expr, "comment": comment}


def _accept(direction: str, bridge: str) -> list[Json]:
    return [{"match": {"op": "==", "left": {"meta": {"key": direction}}, "right": bridge}}, {"accept": None}]


def _jumps(rules: list[Json]) -> list[Json]:
    return [r for r in rules if any(e.get("jump", {}).get("target") == CHAIN for e in r["expr"])]


def admit(nft: Nftables, network: str, bridge: str, family: str = "ip") -> None:
    """Let ``bridge``'s traffic past iptables' (``family`` "ip6": ip6tables') FORWARD chain, if the host has one."""
    forward = _chain_rules(nft, family, FORWARD)
    if forward is None:
        return
    ours = _chain_rules(nft, family, CHAIN)
    commands: list[Json] = []
    if ours is None:
        ours = []
        commands.append({"add": {"chain": {"family": family, "table": TABLE, "name": CHAIN}}})
    for direction in ("iifname", "oifname"):
        expr = _accept(direction, bridge)
        if not any(r["expr"] == expr for r in ours):
            commands.append({"add": {"rule": _rule(family, CHAIN, expr, network)}})
    if not _jumps(forward):
        commands.append({"add": {"rule": _rule(family, FORWARD, [{"jump": {"target": CHAIN}}], JUMP_COMMENT)}})
    if commands:
        nft.run(commands)


def revoke(nft: Nftables, network: str, last: bool, family: str = "ip") -> None:
    """Remove ``network``'s rules from sampan's chain; with ``last``, the chain and the jump."""
    ours = _chain_rules(nft, family, CHAIN)
    if ours is None:
        return
    commands: list[Json] = [{"delete": {"rule": {"family": family, "table": TABLE, "chain": CHAIN,
                                                  "handle": r["handle"]}}}
                            for r in ours if r.get("comment") == network]
    if last:
        for r in _jumps(_chain_rules(nft, family, FORWARD) or []):
            commands.append({"delete": {"rule": {"family": family, "table": TABLE, "chain": FORWARD,
                                                  "handle": r["handle"]}}})
        chain = {"family": family, "table": TABLE, "name": CHAIN}
        commands += [{"flush": {"chain": chain}}, {"delete": {"chain": chain}}]
    if commands:
        nft.run(commands)
