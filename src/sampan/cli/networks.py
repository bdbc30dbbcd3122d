"""`network ...` and `port`: clients of sampand's /networks routes and of a container's
NetworkSettings.Ports, with the docker CLI's output, messages and exit codes.

What the docker CLI checks itself before it asks the daemon (how --subnet, --gateway and
--ip-range pair up, `port`'s PRIVATE_PORT) is checked here with its words; the rest (names,
drivers, addresses) is the daemon's to refuse."""
from __future__ import annotations

import sys

from .. import errors
from .client import APIError, Client, quote
from .command import CLIError, daemon_error, each, object_group, verb
from .containers import filters_query
from .createflags import parse_kv

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any


def natural_key(text: str) -> list[tuple]:
    """A sort key in the order of Go's sortorder.NaturalLess (the docker CLI sorts networks and
    port lines by it): runs of digits by their value, digits before other bytes, fewer leading
    zeros first, a prefix before what it starts."""
    data, key, i = text.encode(), [], 0
    while i < len(data):
        if 48 <= data[i] <= 57:
            j = i
            while j < len(data) and 48 <= data[j] <= 57:
                j += 1
            digits = data[i:j].lstrip(b"0")
            key.append((0, len(digits), digits, j - i - len(digits)))
            i = j
        else:
            key.append((1, data[i]))
            i += 1
    return key


def _network_path(name: str, suffix: str = "") -> str:
    return f"/networks/{quote(name, '')}{suffix}"


def _comma_list(values: list[str]) -> list[str]:
    """A Go "strings" flag: each use may hold several values, comma separated."""
    return [v for value in values for v in value.split(",")]


# ---------------------------------------------------------------------------- create
def _contains(subnet: str, address: str) -> bool:
    """The docker CLI's subnetMatches: is ``address`` (an IP, or a CIDR's address) in ``subnet``."""
    import ipaddress
    try:
        network = ipaddress.ip_network(subnet, strict=False)
    except ValueError:
        raise CLIError(f"invalid subnet: invalid CIDR address: {subnet}") from None
    try:
        return ipaddress.ip_address(address.split("/", 1)[0]) in network
    except ValueError:
        return False


def ipam_config(subnets: list[str], ranges: list[str], gateways: list[str]) -> list[dict]:
    """IPAM.Config from --subnet, --ip-range and --gateway: each range and gateway goes with the
    subnet holding it (the docker CLI's consolidateIpam, its messages)."""
    if len(subnets) < len(ranges) or len(subnets) < len(gateways):
        raise CLIError("every ip-range or gateway must have a corresponding subnet")
    configs: dict[str, dict] = {}
    for subnet in subnets:
        if any(_contains(subnet, other) or _contains(other, subnet) for other in configs):
            raise CLIError("multiple overlapping subnet configuration is not supported")
        configs[subnet] = {"Subnet": subnet}
    for values, field, flag_words in ((ranges, "IPRange", ("range", "ranges", "on the same subnet")),
                                      (gateways, "Gateway", ("gateway", "gateways", "for the same subnet"))):
        for value in values:
            holders = [s for s in subnets if _contains(s, value)]
            if not holders:
                raise CLIError(f"no matching subnet for {flag_words[0]} {value}")
            for subnet in holders:
                if field in configs[subnet]:
                    raise CLIError(f"cannot configure multiple {flag_words[1]} ({value}, {configs[subnet][field]}) "
                                   f"{flag_words[2]} ({subnet})")
                configs[subnet][field] = value
    return list(configs.values())


def cmd_network_create(client: Client, ns: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "Name": ns.name, "Driver": ns.driver, "Internal": ns.internal, "Attachable": ns.attachable,
        "IPAM": {"Driver": "default", "Options": {},
                 "Config": ipam_config(_comma_list(ns.subnet), _comma_list(ns.ip_range), _comma_list(ns.gateway))},
        "Options": parse_kv(ns.opt), "Labels": parse_kv(ns.label),
    }
    if ns.ipv6:
        body["EnableIPv6"] = True
    print(client.post("/networks/create", body)["Id"])
    return 0


# ---------------------------------------------------------------------------- ls, inspect
NETWORK_HEADERS = {"ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE", "IPv4": "IPV4",
                   "IPv6": "IPV6", "Internal": "INTERNAL", "Labels": "LABELS", "CreatedAt": "CREATED AT"}
NETWORK_TABLE = "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}"


def go_time_of_rfc3339(text: str) -> str:
    """Go's time.Time.String() of a time decoded from RFC 3339 UTC ("…T01:02:03.45Z"), as the
    docker CLI shows a network's CreatedAt: "2026-01-02 01:02:03.45 +0000 UTC"."""
    if len(text) < 20 or not text.endswith("Z"):
        return text
    seconds, _, fraction = text[:-1].partition(".")
    fraction = fraction.rstrip("0")
    return f"{seconds[:10]} {seconds[11:19]}{'.' + fraction if fraction else ''} +0000 UTC"


def _network_row(n: dict, no_trunc: bool) -> dict:
    return {"ID": n["Id"] if no_trunc else n["Id"][:12], "Name": n.get("Name", ""), "Driver": n.get("Driver", ""),
            "Scope": n.get("Scope", ""), "IPv4": str(bool(n.get("EnableIPv4"))).lower(),
            "IPv6": str(bool(n.get("EnableIPv6"))).lower(), "Internal": str(bool(n.get("Internal"))).lower(),
            "Labels": ",".join(f"{k}={v}" for k, v in (n.get("Labels") or {}).items()),
            "CreatedAt": go_time_of_rfc3339(n.get("Created") or "")}


def cmd_network_ls(client: Client, ns: argparse.Namespace) -> int:
    from . import format as fmt
    found = sorted(client.call("GET", "/networks", {"filters": filters_query(ns.filter)}),
                   key=lambda n: natural_key(n.get("Name", "")))
    if ns.quiet:
        for n in found:
            print(n["Id"] if ns.no_trunc else n["Id"][:12])
        return 0
    fmt.write_formatted(ns.format or NETWORK_TABLE, [_network_row(n, ns.no_trunc) for n in found], NETWORK_HEADERS,
                        sys.stdout.write, NETWORK_TABLE)
    return 0


def cmd_network_inspect(client: Client, ns: argparse.Namespace) -> int:
    from . import format as fmt
    found: list[dict] = []
    code = each(ns.names, lambda n: found.append(client.get(_network_path(n))), quiet=True)
    fmt.write_inspected(ns.format, found, sys.stdout.write)
    return code


# ---------------------------------------------------------------------------- rm, prune
def cmd_network_rm(client: Client, ns: argparse.Namespace) -> int:
    """Each network in turn; a refused one is reported and the others still go (with --force,
    one that does not exist is passed over in silence)."""
    code = 0
    for name in ns.names:
        try:
            client.delete(_network_path(name))
        except APIError as e:
            if not (ns.force and e.status == 404):
                print(daemon_error(e.message), file=sys.stderr)
                code = errors.CLI_EXIT_FAILURE
            continue
        print(name)
    return code


_PRUNE_WARNING = ("WARNING! This will remove all custom networks not used by at least one container.\n"
                  "Are you sure you want to continue? [y/N] ")


def cmd_network_prune(client: Client, ns: argparse.Namespace) -> int:
    if not ns.force:
        sys.stdout.write(_PRUNE_WARNING)
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    deleted = client.call("POST", "/networks/prune", {"filters": filters_query(ns.filter)}).get("NetworksDeleted")
    if deleted:
        print("Deleted Networks:\n" + "".join(f"{name}\n" for name in deleted))
    return 0


# ---------------------------------------------------------------------------- connect, disconnect
def cmd_network_connect(client: Client, ns: argparse.Namespace) -> int:
    endpoint: dict[str, Any] = {"Aliases": _comma_list(ns.alias) or None}
    if ns.ip:
        endpoint["IPAMConfig"] = {"IPv4Address": ns.ip}
    client.post(_network_path(ns.network, "/connect"), {"Container": ns.container, "EndpointConfig": endpoint})
    return 0


def cmd_network_disconnect(client: Client, ns: argparse.Namespace) -> int:
    client.post(_network_path(ns.network, "/disconnect"), {"Container": ns.container, "Force": ns.force})
    return 0


# ---------------------------------------------------------------------------- port
def _host_port(binding: dict) -> str:
    """Go's net.JoinHostPort(HostIp, HostPort): an IPv6 address in brackets."""
    ip = binding.get("HostIp") or ""
    return f"[{ip}]:{binding.get('HostPort', '')}" if ":" in ip else f"{ip}:{binding.get('HostPort', '')}"


def _port_number(port: str) -> None:
    """`port`'s PRIVATE_PORT as the docker CLI checks it (Go's strconv.ParseUint, 16 bits)."""
    if not port.isascii() or not port.isdigit():
        raise CLIError(f'Error: invalid port ({port}): strconv.ParseUint: parsing "{port}": invalid syntax')
    if int(port) > 0xFFFF:
        raise CLIError(f'Error: invalid port ({port}): strconv.ParseUint: parsing "{port}": value out of range')


def cmd_port(client: Client, ns: argparse.Namespace) -> int:
    ports = (client.get(f"/containers/{quote(ns.container, '')}/json").get("NetworkSettings") or {}).get("Ports") or {}
    if ns.port:
        number, _, proto = ns.port.partition("/")
        _port_number(number)
        bindings = ports.get(f"{number}/{proto or 'tcp'}")
        if not bindings:
            raise CLIError(f"Error: No public port '{ns.port}' published for {ns.container}")
        lines = [_host_port(b) for b in bindings]
    else:
        lines = [f"{private} -> {_host_port(b)}" for private, bindings in ports.items() for b in bindings or ()]
    for line in sorted(lines, key=natural_key):
        print(line)
    return 0


# ---------------------------------------------------------------------------- registration
# The commands register() adds (main.build_parser builds only their parsers for them).
COMMANDS = frozenset(("network", "port"))


def register(sub: argparse._SubParsersAction) -> None:
    """`network ...` and `port`."""
    add = object_group(sub, "network", "Manage networks")

    p = add("create", cmd_network_create, "Create a network")
    p.add_argument("-d", "--driver", default="bridge", help="Driver to manage the Network")
    p.add_argument("--subnet", action="append", default=[],
                   help="Subnet in CIDR format that represents a network segment")
    p.add_argument("--gateway", action="append", default=[], help="IPv4 or IPv6 Gateway for the master subnet")
    p.add_argument("--ip-range", action="append", default=[], help="Allocate container ip from a sub-range")
    p.add_argument("--internal", action="store_true", help="Restrict external access to the network")
    p.add_argument("--attachable", action="store_true", help="Enable manual container attachment")
    p.add_argument("--ipv6", action="store_true", help="Enable or disable IPv6 address assignment")
    p.add_argument("--label", action="append", default=[], help="Set metadata on a network")
    p.add_argument("-o", "--opt", action="append", default=[], help="Set driver specific options")
    p.add_argument("name", metavar="NETWORK")
    p = add("ls", cmd_network_ls, "List networks", ("list",))
    p.add_argument("-q", "--quiet", action="store_true", help="Only display network IDs")
    p.add_argument("-f", "--filter", action="append", default=[],
                   help="Provide filter values (e.g. \"driver=bridge\")")
    p.add_argument("--format", help="Format output using a custom template: 'table', 'table TEMPLATE', "
                   "'json' or 'TEMPLATE'")
    p.add_argument("--no-trunc", action="store_true", help="Do not truncate the output")
    p = add("inspect", cmd_network_inspect, "Display detailed information on one or more networks")
    p.add_argument("-f", "--format", help="Format output using a custom template: 'json' or 'TEMPLATE'")
    p.add_argument("names", nargs="+", metavar="NETWORK")
    p = add("rm", cmd_network_rm, "Remove one or more networks", ("remove",))
    p.add_argument("-f", "--force", action="store_true", help="Do not error if the network does not exist")
    p.add_argument("names", nargs="+", metavar="NETWORK")
    p = add("prune", cmd_network_prune, "Remove all unused networks")
    p.add_argument("--filter", action="append", default=[], help="Provide filter values (e.g. \"until=<timestamp>\")")
    p.add_argument("-f", "--force", action="store_true", help="Do not prompt for confirmation")
    p = add("connect", cmd_network_connect, "Connect a container to a network")
    p.add_argument("--alias", action="append", default=[], help="Add network-scoped alias for the container")
    p.add_argument("--ip", help="IPv4 address (e.g., \"172.30.100.104\")")
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("container", metavar="CONTAINER")
    p = add("disconnect", cmd_network_disconnect, "Disconnect a container from a network")
    p.add_argument("-f", "--force", action="store_true", help="Force the container to disconnect from a network")
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("container", metavar="CONTAINER")
    p = sub.add_parser("port", help="List port mappings or a specific mapping for the container",
                       description="List port mappings or a specific mapping for the container")
    p.set_defaults(func=verb(cmd_port, "port"))
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("port", nargs="?", metavar="PRIVATE_PORT[/PROTO]")
