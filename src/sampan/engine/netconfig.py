"""A container's network request as the Docker API gives it, checked at create: the network
mode (HostConfig.NetworkMode), the endpoints (NetworkingConfig.EndpointsConfig), published
ports (PortBindings, PublishAllPorts with ExposedPorts) and extra hosts; and the shapes
inspect and ps show them in (NetworkSettings.Ports, ContainerSummary.Ports).

Pure functions: no kernel, no state (networking.py does the work at start)."""
from __future__ import annotations

import ipaddress
import re

from ..network.api import PortMapping
from .errors import InvalidParameter

BUILTIN_NETWORKS = ("bridge", "host", "none")
PROTOCOLS = ("tcp", "udp", "sctp")
HOST_GATEWAY = "host-gateway"
_PORT_KEY = re.compile(r"^(\d+)(?:-(\d+))?(?:/(\w+))?$")


def mode_of(host_config: dict) -> str:
    """The network mode as dockerd stores it: "default" (or nothing) is "bridge"."""
    mode = host_config.get("NetworkMode") or "default"
    return "bridge" if mode == "default" else mode


def kind_of(mode: str) -> str:
    """host | none | container (another container's namespace) | network (bridge or a user network)."""
    if mode in ("host", "none"):
        return mode
    return "container" if mode.startswith("container:") else "network"


def _port(text: str, what: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= 65535:
        raise InvalidParameter(f"invalid {what}: {text}")
    return int(text)


def parse_port_key(key: str) -> tuple[int, int, str]:
    """"80/tcp", "80", "8000-8010/udp" -> (first, last, protocol)."""
    port, _, proto = key.partition("/")
    if port.isdigit() and proto in PROTOCOLS and 0 < int(port) <= 65535:  # (the usual form, quickly)
        return int(port), int(port), proto
    m = _PORT_KEY.match(key.strip())
    if not m:
        raise InvalidParameter(f"invalid port specification: \"{key}\"")
    low = _port(m.group(1), "containerPort")
    high = _port(m.group(2), "containerPort") if m.group(2) else low
    proto = (m.group(3) or "tcp").lower()
    if proto not in PROTOCOLS:
        raise InvalidParameter(f"invalid proto: {proto}")
    if high < low:
        raise InvalidParameter(f"invalid port range: {key}")
    return low, high, proto


def _host_ports(text: str) -> tuple[int, int]:
    """A binding's HostPort: "" (any), "8080", "8000-8010" -> (low, high); (0, 0) is any."""
    text = (text or "").strip()
    if not text:
        return 0, 0
    low, sep, high = text.partition("-")
    lo = _port(low, "hostPort")
    hi = _port(high, "hostPort") if sep else lo
    if hi < lo:
        raise InvalidParameter(f"invalid hostPort: {text}")
    return lo, hi


def _host_ip(text: str) -> str:
    text = (text or "").strip().strip("[]")
    if text in ("", "0.0.0.0"):
        return ""
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidParameter(f"invalid IP address: {text}") from None
    # an IPv6 one ("::" for every IPv6 address) is published to the container's IPv6 address:
    # the firewall refuses it, with the reason, for a container on a network without IPv6
    return str(addr)


def exposed(config: dict, host_config: dict) -> list[str]:
    """The container's ports ("80/tcp"), exposed by the image or the request, or published."""
    ports = set()
    for key in [*(config.get("ExposedPorts") or {}), *(host_config.get("PortBindings") or {})]:
        low, high, proto = parse_port_key(key)
        ports.update((proto, p) for p in range(low, high + 1))
    return [f"{p}/{proto}" for proto, p in sorted(ports)]


def port_mappings(config: dict, host_config: dict) -> list[PortMapping]:
    """What to publish: each PortBindings entry, and with PublishAllPorts every exposed port
    that has none (on a host port the kernel's ephemeral range gives). Consecutive ports that
    map one to one are one mapping (a 1,000-port range is one firewall element)."""
    singles: list[tuple[str, str, int, int, int]] = []  # (proto, host ip, container port, host low, host high)
    bound = set()
    for key, bindings in (host_config.get("PortBindings") or {}).items():
        low, high, proto = parse_port_key(key)
        if not isinstance(bindings, list):
            raise InvalidParameter(f"invalid port bindings for {key}: a list is expected")
        for b in bindings or [{}]:
            if not isinstance(b, dict):
                raise InvalidParameter(f"invalid port binding for {key}: {b!r}")
            host_ip = _host_ip(b.get("HostIp") or "")
            hlow, hhigh = _host_ports(str(b.get("HostPort") or ""))
            if high > low and hlow and hhigh - hlow != high - low:
                raise InvalidParameter(f"invalid ranges specified for container and host Ports: {key} and {b.get('HostPort')}")
            for offset, port in enumerate(range(low, high + 1)):
                bound.add(f"{port}/{proto}")
                if high > low and hlow:
                    singles.append((proto, host_ip, port, hlow + offset, hlow + offset))
                else:
                    singles.append((proto, host_ip, port, hlow, hhigh))
    if host_config.get("PublishAllPorts"):
        for key in exposed(config, {}):
            if key not in bound:
                port, proto = key.split("/")
                singles.append((proto, "", int(port), 0, 0))
    out: list[PortMapping] = []
    for proto, host_ip, cport, hlow, hhigh in sorted(singles):
        last = out[-1] if out else None
        if last is not None and hlow and hlow == hhigh and last.proto == proto and last.host_ip == host_ip \
                and last.host_port and _last_ports(last) == (cport - 1, hlow - 1):
            out[-1] = PortMapping(host_ip, last.host_port, last.container_port, proto, hlow, cport)
        else:
            out.append(PortMapping(host_ip, hlow, cport, proto, 0 if hhigh == hlow else hhigh, 0))
    return out


def _last_ports(m: PortMapping) -> tuple[int, int] | None:
    """The last (container, host) port of a one-to-one mapping; None for a host range for one
    container port."""
    if m.host_port_end and not m.container_port_end:
        return None
    return m.container_port_end or m.container_port, m.host_port_end or m.host_port


def _expand(m: PortMapping) -> list[tuple[int, int]]:
    """(container port, host port) of each port a published mapping holds."""
    count = (m.container_port_end - m.container_port + 1) if m.container_port_end else 1
    return [(m.container_port + i, m.host_port + i) for i in range(count)]


def ports_view(exposed_keys: list[str], published: list[PortMapping]) -> dict:
    """NetworkSettings.Ports: every exposed port, with its host bindings or None."""
    view: dict = {k: None for k in exposed_keys}
    for m in published:
        for cport, hport in _expand(m):
            view.setdefault(f"{cport}/{m.proto}", None)
            view[f"{cport}/{m.proto}"] = (view[f"{cport}/{m.proto}"] or []) + [
                {"HostIp": m.host_ip or "0.0.0.0", "HostPort": str(hport)}]
    return view


def summary_ports(exposed_keys: list[str], published: list[PortMapping]) -> list[dict]:
    """ContainerSummary.Ports (what `docker ps` shows in PORTS)."""
    out, seen = [], set()
    for m in published:
        for cport, hport in _expand(m):
            seen.add(f"{cport}/{m.proto}")
            out.append({"IP": m.host_ip or "0.0.0.0", "PrivatePort": cport, "PublicPort": hport, "Type": m.proto})
    for key in exposed_keys:
        if key not in seen:
            port, proto = key.split("/")
            out.append({"PrivatePort": int(port), "Type": proto})
    return out


def extra_hosts(host_config: dict, gateway: str) -> list[tuple[str, str]]:
    """--add-host NAME:ADDRESS entries as (names, address); host-gateway is the address the
    host has on the container's network (its gateway)."""
    out = []
    for entry in host_config.get("ExtraHosts") or []:
        name, sep, addr = str(entry).partition(":")
        if not sep:
            name, sep, addr = str(entry).partition("=")
        if not sep or not name:
            raise InvalidParameter(f"invalid IP address in add-host: \"{entry}\"")
        addr = addr.strip("[]")
        if addr == HOST_GATEWAY:
            if not gateway:
                raise InvalidParameter("unable to derive the IP value for host-gateway: the container has no network gateway")
            addr = gateway
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            raise InvalidParameter(f"invalid IP address in add-host: \"{addr}\"") from None
        out.append((name, addr))
    return out


def endpoint_configs(body: dict, mode: str) -> dict[str, dict]:
    """The endpoints a container asks for at create: NetworkingConfig.EndpointsConfig, keyed by
    network name (Docker allows one at create; the mode's network comes first)."""
    requested = {("bridge" if name == "default" else name): cfg for name, cfg in
                 ((body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}).items()}
    for name, cfg in requested.items():
        if cfg is not None and not isinstance(cfg, dict):
            raise InvalidParameter(f"invalid endpoint settings for network {name}")
    out: dict[str, dict] = {}
    if kind_of(mode) == "network":
        out[mode] = _endpoint_config(requested.pop(mode, None) or {}, body)
    else:
        requested.pop(mode, None)
    for name, cfg in requested.items():
        if kind_of(mode) != "network":
            raise InvalidParameter(f"container cannot be connected to network {name} in network mode {mode}")
        out[name] = _endpoint_config(cfg or {}, {})
    return out


def _endpoint_config(cfg: dict, body: dict) -> dict:
    """What is kept of an endpoint request: the fixed address, aliases, MAC (the legacy
    Config.MacAddress of the create body goes to the first network)."""
    ipam = cfg.get("IPAMConfig") or {}
    ip = (ipam.get("IPv4Address") or "").strip()
    ip6 = (ipam.get("IPv6Address") or "").strip()
    for text, family in ((ip, ipaddress.IPv4Address), (ip6, ipaddress.IPv6Address)):
        if text:
            try:
                family(text)
            except ValueError:
                raise InvalidParameter(f"invalid IPv{4 if family is ipaddress.IPv4Address else 6} address: {text}") from None
    fixed = {k: v for k, v in (("IPv4Address", ip), ("IPv6Address", ip6)) if v}
    aliases = [a for a in (cfg.get("Aliases") or []) if a]
    mac = (cfg.get("MacAddress") or body.get("MacAddress") or "").strip()
    return {"IPAMConfig": fixed or None, "Aliases": aliases or None, "MacAddress": mac,
            "Links": cfg.get("Links") or None, "DriverOpts": cfg.get("DriverOpts") or None}
