"""A container's /etc/hosts, /etc/resolv.conf and /etc/hostname, as Docker writes them.

resolv.conf follows libnetwork's resolvconf package: the host's file parsed (nameserver,
search/domain, options, other lines kept), then either the "legacy" transform (networks
without the embedded DNS: the host's loopback resolvers dropped, Google's two if none is
left) or the "internal resolver" one (user networks: only 127.0.0.11, the host's resolvers
kept for the embedded DNS to forward to, ``ndots:0`` unless set), and Docker's trailing
comments saying how the file was made.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

HOST_RESOLV_CONF = "/etc/resolv.conf"
INTERNAL_DNS = "127.0.0.11"
DEFAULT_NAMESERVERS = ("8.8.8.8", "8.8.4.4")
DEFAULT_NAMESERVERS6 = ("2001:4860:4860::8888", "2001:4860:4860::8844")  # added for a container with IPv6
_INTERNAL_OPTIONS = ("ndots:0",)

_DEFAULT_HOSTS = (("127.0.0.1", "localhost"), ("::1", "localhost ip6-localhost ip6-loopback"),
                  ("fe00::0", "ip6-localnet"), ("ff00::0", "ip6-mcastprefix"), ("ff02::1", "ip6-allnodes"),
                  ("ff02::2", "ip6-allrouters"))


def hostname_file(hostname: str) -> str:
    return hostname + "\n"


def hosts_file(ip: str = "", hostname: str = "", domainname: str = "",
               extra: list[tuple[str, str]] | None = None, ip6: str = "") -> str:
    """The default records, ``extra`` (``--add-host``: (names, address) pairs), then the
    container's own ("<ip>\\t<fqdn> <short name>") for its address and its IPv6 address
    (an IPv6 network's), each when it has one, as Docker writes both."""
    records = [*_DEFAULT_HOSTS, *((addr, names) for names, addr in extra or ())]
    fqdn = f"{hostname}.{domainname}" if domainname else hostname
    names = fqdn + (" " + fqdn.split(".", 1)[0] if "." in fqdn else "")
    records += [(address, names) for address in (ip, ip6) if address]
    return "".join(f"{addr}\t{names}\n" for addr, names in records)


@dataclass
class _Parsed:
    nameservers: list[str] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)


def _parse(text: str) -> _Parsed:
    out = _Parsed()
    for line in text.splitlines():
        words = line.split()
        if not words or words[0][0] in "#;":
            continue
        key, args = words[0], words[1:]
        if key == "nameserver":
            if args:
                try:
                    ipaddress.ip_address(args[0].split("%")[0])  # an IPv6 one may carry a %zone
                    out.nameservers.append(args[0])
                except ValueError:
                    out.invalid.append(args[0])
        elif key in ("search", "domain"):
            if args:
                out.search = args  # only the last one counts
        elif key == "options":
            out.options.extend(args)
        else:
            out.other.append(line)
    return out


def _host_only(server: str, ipv6: bool = False) -> bool:
    """A resolver the container cannot reach itself: loopback, link-local (its zone is a host
    link), or IPv6 for a container without an IPv6 address (Docker's FilterResolvDNS)."""
    addr = ipaddress.ip_address(server.split("%")[0])
    return addr.is_loopback or addr.is_link_local or (addr.version == 6 and not ipv6)


def _has_option(options: list[str], name: str) -> bool:
    return any(o.split(":", 1)[0] == name for o in options)


def resolv_conf(host_text: str, *, internal_dns: bool, dns: list[str] | None = None,
                search: list[str] | None = None, options: list[str] | None = None,
                source: str = HOST_RESOLV_CONF, ipv6: bool = False) -> str:
    """The container's resolv.conf from the host's (``host_text``, read from ``source``) and
    the ``--dns``/``--dns-search``/``--dns-option`` overrides (None = not given). ``ipv6``:
    the container has an IPv6 address, so the host's IPv6 resolvers are kept for it."""
    rc = _parse(host_text)
    ndots_from = "host" if _has_option(rc.options, "ndots") else ""
    overrides = []
    if dns is not None:
        rc.nameservers, overrides = list(dns), [*overrides, "nameservers"]
    if search is not None:
        rc.search, overrides = [s for s in search if s != "."], [*overrides, "search"]
    if options is not None:
        rc.options, overrides = list(options), [*overrides, "options"]
        ndots_from = "override" if _has_option(rc.options, "ndots") else ""
    used_default = False
    ext: list[str] = []
    if internal_dns:
        ext = [f"host({s})" if dns is None and _host_only(s) else s for s in rc.nameservers]
        if not ext:
            ext, used_default = list(DEFAULT_NAMESERVERS), True
        rc.nameservers = [INTERNAL_DNS]
        for opt in _INTERNAL_OPTIONS:
            if not _has_option(rc.options, opt.split(":", 1)[0]):
                rc.options.append(opt)
                ndots_from = "internal" if opt.startswith("ndots:") else ndots_from
        transform = "internal resolver"
    else:
        if dns is None:
            rc.nameservers = [s for s in rc.nameservers if not _host_only(s, ipv6)]
        if not rc.nameservers:
            rc.nameservers, used_default = [*DEFAULT_NAMESERVERS, *(DEFAULT_NAMESERVERS6 if ipv6 else ())], True
        transform = "legacy"
    lines = [f"nameserver {s}" for s in rc.nameservers]
    if rc.search:
        lines.append("search " + " ".join(rc.search))
    if rc.options:
        lines.append("options " + " ".join(rc.options))
    lines += rc.other
    lines += ["", f"# Based on host file: '{source}' ({transform})"]
    if used_default:
        lines.append("# Used default nameservers.")
    if ext:
        lines.append(f"# ExtServers: [{' '.join(ext)}]")
    if rc.invalid:
        lines.append(f"# Invalid nameservers: [{' '.join(rc.invalid)}]")
    lines.append(f"# Overrides: [{' '.join(overrides)}]")
    if ndots_from:
        lines.append(f"# Option ndots from: {ndots_from}")
    return "\n".join(lines) + "\n"


def read_host_resolv_conf(path: str = HOST_RESOLV_CONF) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""
