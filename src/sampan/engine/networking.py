"""The engine's side of networking: a container's network namespace and endpoints made at
start and released when it stops, the files it sees (/etc/hosts, resolv.conf, hostname), and
its NetworkSettings.

The network layer (``sampan.network``) does the work; its Manager is made on first use
(pyroute2 and libnftables load then, once) and always used in the engine's network
namespace: the process's own, or ``netns`` (a namespace file) for an engine that keeps its
networks apart from the host's (tests, nested engines), through one thread that joined it.

Where a container's namespace is: ``<exec_root>/netns/<container id>`` (the Manager's
sandbox path) for the modes that have one of their own (a network, ``none``), known at
create so the OCI spec names it before it exists; ``host`` joins the engine's namespace;
``container:ID`` joins the other container's file.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import os
import threading
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from .. import errors
from ..network import files, netns as _netns
from . import netconfig
from .errors import Conflict, EngineError, Forbidden, InvalidParameter, NotFound

if TYPE_CHECKING:
    from ..network.api import Endpoint, Network
    from ..network.dns import EmbeddedDns
    from ..network.ipam import Ipam
    from ..network.manager import Manager

# a container's name by id (None: gone), and its links (alias -> container id), for the embedded DNS
NameOf = Callable[[str], "str | None"]
LinksOf = Callable[[str], "dict[str, str]"]

T = TypeVar("T")
_NETWORK_FILES = ("hostname", "hosts", "resolv.conf")


def engine_error(e: errors.Error) -> EngineError:
    """The network layer's error as the engine's kind of the same class (the API and the CLI
    read the kind; start's failure handling catches EngineError)."""
    cls = {errors.NOT_FOUND: NotFound, errors.CONFLICT: Conflict, errors.INVALID: InvalidParameter,
           errors.FORBIDDEN: Forbidden}.get(
        errors.kind_of(e), EngineError)
    return cls(str(e))


def builtin_id(name: str) -> str:
    """The id of the pseudo networks host and none (they have no record)."""
    return hashlib.sha256(f"sampan-network-{name}".encode()).hexdigest()


def endpoint_id(ep: Endpoint) -> str:
    return hashlib.sha256(f"{ep.container_id}/{ep.network_id}/{ep.host_ifname}".encode()).hexdigest()


def interface_stats(pid: int) -> dict[str, dict[str, int]]:
    """The ``networks`` of a stats sample: the counters of each link but lo in the network
    namespace of ``pid`` (its /proc/PID/net/dev)."""
    keys = ("rx_bytes", "rx_packets", "rx_errors", "rx_dropped", None, None, None, None,
            "tx_bytes", "tx_packets", "tx_errors", "tx_dropped")
    out = {}
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            lines = f.readlines()[2:]
    except OSError:
        return {}
    for line in lines:
        name, _, counters = line.partition(":")
        name = name.strip()
        if name != "lo":
            out[name] = {k: int(v) for k, v in zip(keys, counters.split()) if k}
    return out


def write_file(path: str, text: str) -> None:
    """In place (truncate and write): the file may be bind-mounted in a running container,
    which keeps seeing the inode it mounted."""
    with open(path, "w") as f:
        f.write(text)


class Networking:
    def __init__(self, root: str, exec_root: str, netns: str | None = None, firewall: bool = True,
                 default_bridge: bool = True, default_subnet: str = "", default_gateway: str = "",
                 default_ipv6: bool = False, default_subnet6: str = "") -> None:
        self.root, self.exec_root, self.netns = root, exec_root, netns
        self.netns_dir = os.path.join(exec_root, "netns")
        self.use_firewall = firewall
        self.default_bridge = default_bridge
        self.default_subnet, self.default_gateway = default_subnet, default_gateway
        self.default_ipv6, self.default_subnet6 = default_ipv6, default_subnet6
        self._ipam: Ipam | None = None
        self._manager: Manager | None = None
        self._dns: EmbeddedDns | None = None
        self.name_of: NameOf = lambda cid: None  # the engine sets them
        self.links_of: LinksOf = lambda cid: {}
        self._lock = threading.Lock()
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None
        self._on_thread = threading.local()  # .yes on the thread that joined ``netns``
        if netns:
            fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)

            def join() -> None:
                from ..linux.namespaces import CLONE_NEWNET, setns
                setns(fd, CLONE_NEWNET, f"setns into {netns}")
                self._on_thread.yes = True
            self._thread = concurrent.futures.ThreadPoolExecutor(1, "engine-netns", initializer=join)
            self._thread.submit(os.close, fd).result()

    def close(self) -> None:
        if self._dns is not None:
            self._dns.close()
        if self._manager is not None:
            self.run(self._manager.close)
            close_firewall = getattr(self._manager.firewall, "close", None)
            if close_firewall is not None:
                self.run(close_firewall)
        if self._ipam is not None:
            self._ipam.close()
        if self._thread is not None:
            self._thread.shutdown(wait=True)

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn`` in the engine's network namespace; a network error raised as the engine's."""
        try:
            if self._thread is None or getattr(self._on_thread, "yes", False):
                return fn(*args, **kwargs)
            return self._thread.submit(fn, *args, **kwargs).result()
        except errors.Error as e:
            if isinstance(e, EngineError):
                raise
            raise engine_error(e) from None

    @property
    def ipam(self) -> Ipam:
        """The network records (state.db), for reading without the Manager."""
        if self._ipam is None:
            with self._lock:
                if self._ipam is None:
                    from ..network.ipam import Ipam
                    self._ipam = Ipam.open(self.root)
        return self._ipam

    @property
    def manager(self) -> Manager:
        if self._manager is None:
            ipam = self.ipam
            with self._lock:
                if self._manager is None:
                    self._manager = self.run(self._make_manager, ipam)
        return self._manager

    def _make_manager(self, ipam: Ipam) -> Manager:
        from ..network.api import NoFirewall
        from ..network.manager import Manager
        if self.use_firewall:
            from ..network.firewall.firewall import NftFirewall
            return Manager(ipam, self.exec_root, NftFirewall())
        return Manager(ipam, self.exec_root, NoFirewall())

    def warm(self) -> None:
        """Load the network layer in the background (sampand's start): the first container
        on a network does not wait ~0.3 s for pyroute2."""
        if not self.default_bridge:
            return
        threading.Thread(target=lambda: self.manager, name="network-warm", daemon=True).start()

    # ------------------------------------------------------------------ namespaces
    def sandbox_path(self, cid: str) -> str:
        return os.path.join(self.netns_dir, cid)

    def spec_path(self, cid: str, mode: str, target: dict | None = None) -> str | None:
        """The namespace file the container's spec joins (None: the engine process's own);
        ``target``: the container a ``container:ID`` mode names."""
        kind = netconfig.kind_of(mode)
        if kind == "host":
            return self.netns
        if kind == "container":
            assert target is not None
            return self.spec_path(target["id"], netconfig.mode_of(target["host_config"]))
        return self.sandbox_path(cid)

    def get_network(self, ref: str) -> Network:
        return self.run(lambda: self.manager.get(ref))

    def ensure_default(self) -> Network | None:
        """The default network (None when the daemon has none: ``--bridge none``)."""
        if not self.default_bridge:
            return None
        return self.run(lambda: self._ensure_default(self.manager))

    def _ensure_default(self, m: Manager) -> Network:
        return m.ensure_default(self.default_subnet, self.default_gateway, self.default_ipv6, self.default_subnet6)

    # ------------------------------------------------------------------ start / stop
    def setup(self, cid: str, mode: str, endpoints: dict[str, dict], ports: list) -> list[Endpoint]:
        """The container's namespace and its endpoints (``ports`` published on the first), all
        or nothing; returns the endpoints. ``none``: a namespace with only lo."""
        kind = netconfig.kind_of(mode)
        if os.path.exists(self.sandbox_path(cid)):  # a run cut short (a daemon killed mid-start)
            self.teardown(cid, mode)
        if kind == "none":
            self.run(_netns.create, self.sandbox_path(cid))
            return []
        if kind != "network":
            return []
        return self.run(self._connect_all, cid, endpoints, ports)

    def _connect_all(self, cid: str, endpoints: dict[str, dict], ports: list) -> list[Endpoint]:
        m = self.manager
        if netconfig.BUILTIN_NETWORKS[0] in endpoints:
            self._ensure_default(m)
        path = m.create_sandbox(cid)
        made = []
        try:
            for i, (name, cfg) in enumerate(endpoints.items()):
                made.append(self._connect(m, cid, path, name, cfg, ports if i == 0 else []))
        except BaseException:
            m.remove_sandbox(cid)
            raise
        return made

    @staticmethod
    def _connect(m: Manager, cid: str, path: str, name: str, cfg: dict, ports: list) -> Endpoint:
        fixed = cfg.get("IPAMConfig") or {}
        return m.connect(cid, path, name, ip=fixed.get("IPv4Address") or "", ip6=fixed.get("IPv6Address") or "",
                         mac=cfg.get("MacAddress") or "", aliases=tuple(cfg.get("Aliases") or ()), ports=ports)

    def connect_running(self, cid: str, name: str, cfg: dict) -> Endpoint:
        """A running container joins one more network."""
        return self.run(lambda: self._connect(self.manager, cid, self.sandbox_path(cid), name, cfg, []))

    def disconnect_running(self, cid: str, name: str) -> None:
        self.run(lambda: self.manager.disconnect(cid, name))

    def teardown(self, cid: str, mode: str) -> None:
        """What the container's run had: endpoints released, namespace removed. Idempotent."""
        kind = netconfig.kind_of(mode)
        if self._dns is not None:  # (first: its sockets would keep the namespace alive)
            self._dns.detach(cid)
        if kind == "none":
            self.run(_netns.remove, self.sandbox_path(cid))
        elif kind == "network" and (self._manager is not None or self.ipam.endpoints(container_id=cid)
                                    or os.path.exists(self.sandbox_path(cid))):
            self.run(self.manager.remove_sandbox, cid)

    def restore(self, live: set[str]) -> None:
        """At the engine's start: bridges and rules of every network back (a reboot), nothing
        left of containers that are not running (a crash)."""
        stale = os.path.isdir(self.netns_dir) and any(n not in live for n in os.listdir(self.netns_dir))
        if self.ipam.networks() or self.ipam.endpoints() or stale:
            self.run(self.manager.restore, live)

    def endpoints(self, cid: str | None = None) -> list[Endpoint]:
        return self.ipam.endpoints(container_id=cid) if (cid is None or self._ipam is not None
                                                        or os.path.exists(self.sandbox_path(cid))) else []

    # ------------------------------------------------------------------ embedded DNS
    def attach_dns(self, cid: str, eps: list[Endpoint], nets: dict[str, Network],
                   servers: list[str] | None) -> None:
        """127.0.0.11 for a container on a user network (Docker's embedded DNS; none on the
        default bridge); it forwards other names unless every network of it is internal."""
        joined = [nets[e.network_id] for e in eps if e.network_id in nets]
        if not any(n.name != netconfig.BUILTIN_NETWORKS[0] for n in joined):
            return
        if self._dns is None:
            with self._lock:
                if self._dns is None:
                    from ..network.dns import EmbeddedDns
                    # made in the engine's namespace: forwarded queries leave from there
                    self._dns = self.run(EmbeddedDns, self._lookup, reverse=self._reverse)
        self.run(self._dns.attach, cid, self.sandbox_path(cid), any(not n.internal for n in joined),
                 servers or None)

    def _user_networks_of(self, cid: str) -> list[Network]:
        mine = {e.network_id for e in self.ipam.endpoints(container_id=cid)}
        return [n for n in self.ipam.networks() if n.id in mine and n.name != netconfig.BUILTIN_NETWORKS[0]]

    def _lookup(self, cid: str, name: str) -> list[str] | None:
        """The addresses of ``name`` (a container's name, alias or short id, or NAME.NETWORK)
        on the user networks ``cid`` is on, IPv4 and IPv6; None: not theirs (forwarded)."""
        found = []
        linked = {alias.lower(): target for alias, target in self.links_of(cid).items()}
        for net in self._user_networks_of(cid):
            suffix = "." + net.name.lower()
            target = name[:-len(suffix)] if name.endswith(suffix) else name
            for ep in self.ipam.endpoints(network_id=net.id):
                names = {ep.container_id[:12], *(a.lower() for a in ep.aliases)}
                own = self.name_of(ep.container_id)
                if own:
                    names.add(own.lower())
                if target in names or linked.get(target) == ep.container_id:  # (--link on a user network: an alias)
                    found += [ep.ip, ep.ip6] if ep.ip6 else [ep.ip]
        return found or None

    def _reverse(self, cid: str, ip: str) -> str | None:
        for net in self._user_networks_of(cid):
            for ep in self.ipam.endpoints(network_id=net.id):
                own = self.name_of(ep.container_id)
                if ep.ip == ip and own:
                    return f"{own}.{net.name}"
        return None

    # ------------------------------------------------------------------ files
    def write_files(self, cdir: str, config: dict, host_config: dict, eps: list[Endpoint],
                    nets: dict[str, Network], linked: list[tuple[str, str]] | None = None) -> None:
        """hostname, hosts and resolv.conf as Docker writes them for the container's mode;
        ``linked``: the (names, address) of legacy links, after the --add-host entries."""
        mode = netconfig.mode_of(host_config)
        kind = netconfig.kind_of(mode)
        dns, search, options = (host_config.get(k) for k in ("Dns", "DnsSearch", "DnsOptions"))
        host_text = files.read_host_resolv_conf()
        wants_gateway = any(str(h).endswith(netconfig.HOST_GATEWAY) for h in host_config.get("ExtraHosts") or ())
        host_gateway = self._host_gateway(eps) if wants_gateway else ""
        if kind == "host":
            hosts = _read("/etc/hosts")
            extra = netconfig.extra_hosts(host_config, host_gateway)
            hosts += "".join(f"{addr}\t{names}\n" for names, addr in extra)
            resolv = host_text if not (dns or search or options) else files.resolv_conf(
                host_text, internal_dns=False, dns=dns or None, search=search or None, options=options or None)
            hostname = os.uname().nodename
        else:
            first = eps[0] if eps else None
            hosts = files.hosts_file(first.ip if first else "", config.get("Hostname") or "",
                                     config.get("Domainname") or "",
                                     netconfig.extra_hosts(host_config, host_gateway) + list(linked or ()),
                                     ip6=first.ip6 if first else "")
            user_net = any(nets[e.network_id].name != netconfig.BUILTIN_NETWORKS[0] for e in eps
                           if e.network_id in nets) or (kind == "network" and mode != "bridge")
            resolv = files.resolv_conf(host_text, internal_dns=user_net, dns=dns or None,
                                       search=search or None, options=options or None,
                                       ipv6=bool(first and first.ip6))
            hostname = config.get("Hostname") or ""
        write_file(os.path.join(cdir, "hostname"), files.hostname_file(hostname))
        write_file(os.path.join(cdir, "hosts"), hosts)
        write_file(os.path.join(cdir, "resolv.conf"), resolv)

    def _host_gateway(self, eps: list[Endpoint]) -> str:
        """What --add-host NAME:host-gateway means: the host's address on the default bridge
        (dockerd's default --host-gateway-ip), else on the container's first network."""
        default = self.ensure_default()
        if default is not None:
            return default.gateway
        return eps[0].gateway if eps else ""

    @staticmethod
    def copy_files(from_cdir: str, to_cdir: str) -> None:
        """container:ID: the container sees the other's files, as with Docker."""
        for name in _NETWORK_FILES:
            write_file(os.path.join(to_cdir, name), _read(os.path.join(from_cdir, name)))


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""
