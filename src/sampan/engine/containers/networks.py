"""Networks in the engine: a container's namespace and endpoints brought up at start and
down when its run ends, its NetworkSettings, and the network objects of the API
(/networks: create, list, inspect, remove, prune, connect, disconnect) in Docker's shapes.
The kernel work is the network layer's, through ``self.net`` (engine/networking.py)."""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from ...runtime.fsutil import atomic_write
from ...timefmt import rfc3339
from .. import links as _links
from .. import filters as _filters
from .. import netconfig
from ..errors import Conflict, EngineError, Forbidden, InvalidParameter, NotFound
from ..networking import builtin_id, endpoint_id
from .base import EngineBase
from .state import LIVE

if TYPE_CHECKING:
    from ...network.api import Endpoint, Network

_LIST_FILTERS = frozenset({"name", "id", "driver", "label", "type", "dangling", "scope"})
_PRUNE_FILTERS = frozenset({"until", "label", "label!"})
_DRIVERS = {"host": "host", "none": "null"}


class NetworksMixin(EngineBase):
    # ------------------------------------------------------------------ a container's run
    def _network_up(self, rec: dict) -> None:
        """The container's network before its init is made: a namespace and endpoints of its
        own (files rewritten with its addresses), or the namespace of the container it joins.
        All or nothing; raises EngineError."""
        cid, cfg, hc = rec["id"], rec["config"], rec["host_config"]
        mode = netconfig.mode_of(hc)
        kind = netconfig.kind_of(mode)
        if kind == "container":
            target = self._get(mode.split(":", 1)[1])
            if self._status(target) not in LIVE:
                raise Conflict(f"cannot join network of a non running container: {target['id']}")
            self.net.copy_files(self.cdir(target["id"]), self.cdir(cid))
            return
        if kind == "host":
            self.net.write_files(self.cdir(cid), cfg, hc, [], {})
            return
        try:
            eps = self.net.setup(cid, mode, rec.get("networks") or {}, netconfig.port_mappings(cfg, hc))
        except Conflict as e:
            if "port is already allocated" not in str(e):
                raise
            raise Conflict(f"failed to set up container networking: driver failed programming external "
                           f"connectivity on endpoint {rec['name']} ({cid}): {e}") from None
        try:
            nets = self._networks_by_id() if eps else {}
            linked = self._links_up(rec, eps) if hc.get("Links") and mode == "bridge" else []
            self.net.write_files(self.cdir(cid), cfg, hc, eps, nets, linked)
            self.net.attach_dns(cid, eps, nets, hc.get("Dns"))
        except BaseException:
            self.net.teardown(cid, mode)
            raise

    def _links_up(self, rec: dict, eps: list[Endpoint]) -> list[tuple[str, str]]:
        """Legacy links on the default bridge: each linked container must be running; its
        variables go into the container's process environment (config.json rewritten) and
        its (alias id name, address) into /etc/hosts, returned."""
        bridge = {e.network_id for e in eps}
        hosts, env, aliases = [], [], []
        for entry in rec["host_config"]["Links"]:
            target_name, alias = _links.parse(entry)
            target = self._get(target_name)
            ip = next((e.ip for e in self.net.endpoints(target["id"]) if e.network_id in bridge), "")
            if self._status(target) not in LIVE or not ip:
                raise Conflict(f"Cannot link to a non running container: /{target_name} AS /{rec['name']}/{alias}")
            hosts.append((f"{alias} {target['id'][:12]} {target['name']}", ip))
            env += _links.env(alias, rec["name"], target, ip)
            aliases.append(alias)
        path = os.path.join(self._bundle(rec["id"]), "config.json")
        with open(path) as f:
            spec = json.load(f)
        process = spec["process"]
        process["env"] = [v for v in process["env"] if not _links.is_link_var(v, aliases)] + env
        atomic_write(path, json.dumps(spec).encode(), 0o600)
        return hosts

    def remove_link(self, name: str) -> None:
        """``docker rm --link /web/alias``: the link goes from the linking container (its
        hosts file and variables at its next start)."""
        parent, _, alias = name.strip("/").rpartition("/")
        rec = self._get(parent) if parent else None
        wanted = f":/{rec['name']}/{alias}" if rec else ""
        if rec is None or not any(e.endswith(wanted) for e in rec["host_config"].get("Links") or []):
            raise NotFound(f"Could not find container for entity id {name}")
        self.store.update_host_config(rec["id"], lambda hc: hc.update(
            Links=[e for e in hc.get("Links") or [] if not e.endswith(wanted)] or None))

    def _network_down(self, rec: dict) -> None:
        """What the run had, released (idempotent; a failure is left for the next start's
        restore rather than failing a stop or a removal)."""
        try:
            self.net.teardown(rec["id"], netconfig.mode_of(rec["host_config"]))
        except (EngineError, OSError):
            pass

    def _restore_dns(self) -> None:
        """After the engine's start: the embedded DNS of running containers again (its
        sockets went with the daemon that made them)."""
        nets = None
        for rec in self.store.all():
            if self._status(rec) in LIVE and netconfig.kind_of(netconfig.mode_of(rec["host_config"])) == "network":
                eps = self.net.endpoints(rec["id"])
                nets = nets if nets is not None else self._networks_by_id()
                try:
                    self.net.attach_dns(rec["id"], eps, nets, rec["host_config"].get("Dns"))
                except EngineError:
                    pass  # (gone meanwhile: its exit releases the rest)

    def _networks_by_id(self) -> dict[str, Network]:
        return {n.id: n for n in self.net.ipam.networks()}

    # ------------------------------------------------------------------ settings
    def _exposed_of(self, rec: dict) -> list[str]:
        """The container's exposed ports, worked out once (its config does not change; a
        1,000-port range costs ~4 ms each time otherwise, on every inspect and ps)."""
        found = self._exposed_cache.get(rec["id"])
        if found is None:
            found = self._exposed_cache[rec["id"]] = netconfig.exposed(rec["config"], rec["host_config"])
            while len(self._exposed_cache) > 1024:
                self._exposed_cache.pop(next(iter(self._exposed_cache)))
        return found

    def _endpoint_shape(self, name: str, cfg: dict | None, ep: Endpoint | None, net: Network | None,
                        rec: dict) -> dict:
        cfg = cfg or {}
        user_net = net is not None and name != "bridge"
        dns_names = None
        if ep is not None and user_net:
            dns_names = [rec["name"], rec["id"][:12], *[a for a in (cfg.get("Aliases") or []) if a != rec["name"]]]
        return {"IPAMConfig": cfg.get("IPAMConfig"), "Links": cfg.get("Links"), "Aliases": cfg.get("Aliases"),
                "MacAddress": ep.mac if ep else (cfg.get("MacAddress") or ""), "DriverOpts": cfg.get("DriverOpts"),
                "GwPriority": 0,
                "NetworkID": net.id if net else builtin_id(name) if name in _DRIVERS else "",
                "EndpointID": endpoint_id(ep) if ep else "", "Gateway": ep.gateway if ep else "",
                "IPAddress": ep.ip if ep else "", "IPPrefixLen": ep.prefixlen if ep else 0,
                "IPv6Gateway": ep.gateway6 if ep else "", "GlobalIPv6Address": ep.ip6 if ep else "",
                "GlobalIPv6PrefixLen": ep.prefixlen6 if ep else 0, "DNSNames": dns_names}

    def _endpoint_shapes(self, rec: dict, live: bool, eps: list[Endpoint],
                         nets: dict[str, Network]) -> dict[str, dict]:
        mode = netconfig.mode_of(rec["host_config"])
        kind = netconfig.kind_of(mode)
        if kind in ("host", "none"):
            return {mode: self._endpoint_shape(mode, {}, None, None, rec)}
        if kind == "container":
            return {}
        by_name = {nets[e.network_id].name: e for e in eps if e.network_id in nets}
        by_ref = {n.name: n for n in nets.values()}
        return {name: self._endpoint_shape(name, cfg, by_name.get(name), by_ref.get(name), rec)
                for name, cfg in (rec.get("networks") or {}).items()}

    def _network_settings(self, rec: dict, live: bool) -> dict:
        """ContainerInspect.NetworkSettings."""
        cid, cfg, hc = rec["id"], rec["config"], rec["host_config"]
        mode = netconfig.mode_of(hc)
        eps = self.net.endpoints(cid) if live and netconfig.kind_of(mode) == "network" else []
        nets = self._networks_by_id() if rec.get("networks") else {}
        shapes = self._endpoint_shapes(rec, live, eps, nets)
        published = [p for e in eps for p in e.ports]
        default = shapes.get("bridge") if "bridge" in (rec.get("networks") or {}) else None
        has_sandbox = live and netconfig.kind_of(mode) in ("network", "none")
        out = {"Bridge": "", "SandboxID": cid if live else "",
               "SandboxKey": self.net.sandbox_path(cid) if has_sandbox else "",
               "Ports": netconfig.ports_view(self._exposed_of(rec), published) if live else {},
               "HairpinMode": False, "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0,
               "SecondaryIPAddresses": None, "SecondaryIPv6Addresses": None}
        # the deprecated top-level fields are the default bridge's, as with dockerd
        for key in ("EndpointID", "Gateway", "GlobalIPv6Address", "GlobalIPv6PrefixLen", "IPAddress",
                    "IPPrefixLen", "IPv6Gateway", "MacAddress"):
            out[key] = default[key] if default else ("" if key not in ("GlobalIPv6PrefixLen", "IPPrefixLen") else 0)
        out["Networks"] = shapes
        return out

    def _network_summaries(self, recs: list[dict]) -> dict[str, tuple[dict, dict, list[dict]]]:
        """ContainerSummary's HostConfig, NetworkSettings and Ports for each container (one
        read of the endpoints for all)."""
        live = {r["id"] for r in recs if self._status(r) in LIVE}
        with_networks = any(netconfig.kind_of(netconfig.mode_of(r["host_config"])) == "network" for r in recs)
        eps_of: dict[str, list[Endpoint]] = {}
        nets: dict[str, Network] = {}
        if with_networks:
            if live:
                for ep in self.net.endpoints():
                    eps_of.setdefault(ep.container_id, []).append(ep)
            nets = self._networks_by_id()
        out = {}
        for r in recs:
            eps = eps_of.get(r["id"], [])
            running = r["id"] in live
            ports = netconfig.summary_ports(self._exposed_of(r),
                                            [p for e in eps for p in e.ports]) if running else []
            out[r["id"]] = ({"NetworkMode": netconfig.mode_of(r["host_config"])},
                            {"Networks": self._endpoint_shapes(r, running, eps, nets)}, ports)
        return out

    # ------------------------------------------------------------------ network objects
    def _network_shape(self, net: Network, containers: dict | None = None) -> dict:
        ipam_config: dict[str, str] = {"Subnet": net.subnet, "Gateway": net.gateway}
        if net.ip_range:
            ipam_config["IPRange"] = net.ip_range
        configs = [ipam_config] + ([{"Subnet": net.subnet6, "Gateway": net.gateway6}] if net.enable_ipv6 else [])
        return {"Name": net.name, "Id": net.id, "Created": rfc3339(net.created), "Scope": "local",
                "Driver": net.driver, "EnableIPv4": True, "EnableIPv6": net.enable_ipv6,
                "IPAM": {"Driver": "default", "Options": None if net.name == "bridge" else {}, "Config": configs},
                "Internal": net.internal, "Attachable": False, "Ingress": False, "ConfigFrom": {"Network": ""},
                "ConfigOnly": False, "Containers": containers if containers is not None else {},
                "Options": dict(net.options), "Labels": dict(net.labels)}

    @staticmethod
    def _pseudo_shape(name: str) -> dict:
        return {"Name": name, "Id": builtin_id(name), "Created": rfc3339(0), "Scope": "local",
                "Driver": _DRIVERS[name], "EnableIPv4": True, "EnableIPv6": False,
                "IPAM": {"Driver": "default", "Options": None, "Config": None}, "Internal": False,
                "Attachable": False, "Ingress": False, "ConfigFrom": {"Network": ""}, "ConfigOnly": False,
                "Containers": {}, "Options": {}, "Labels": {}}

    def _all_networks(self) -> list[dict]:
        """Every network's shape: the default bridge made if it is not yet, host and none."""
        self.net.ensure_default()  # (as dockerd makes docker0 at its start)
        return [*(self._network_shape(n) for n in self.net.ipam.networks()),
                *(self._pseudo_shape(n) for n in _DRIVERS)]

    def _find_network(self, ref: str) -> dict:
        for name in _DRIVERS:
            if ref in (name, builtin_id(name)):
                return self._pseudo_shape(name)
        if ref == "bridge":
            self.net.ensure_default()
        return self._network_shape(self.net.get_network(ref))

    def network_list(self, filters: _filters.Filters | None = None) -> list[dict]:
        filters = filters or {}
        _filters.accept(filters, _LIST_FILTERS)
        out = []
        used = {e.network_id for e in self.net.endpoints()} if filters.get("dangling") else set()
        for n in self._all_networks():
            builtin = n["Name"] in netconfig.BUILTIN_NETWORKS
            if filters.get("name") and not any(w in n["Name"] for w in filters["name"]):
                continue
            if filters.get("id") and not any(n["Id"].startswith(w) for w in filters["id"]):
                continue
            if filters.get("driver") and n["Driver"] not in filters["driver"]:
                continue
            if filters.get("scope") and "local" not in filters["scope"]:
                continue
            if filters.get("type"):
                for t in filters["type"]:
                    if t not in ("builtin", "custom"):
                        raise InvalidParameter(f"invalid filter: 'type'='{t}'")
                if ("builtin" if builtin else "custom") not in filters["type"]:
                    continue
            if filters.get("dangling"):
                want = filters["dangling"][0] in ("true", "1")
                if (not builtin and n["Id"] not in used) != want:
                    continue
            if not _filters.labels_match(n["Labels"], filters):
                continue
            out.append(n)
        return out

    def network_inspect(self, ref: str) -> dict:
        shape = self._find_network(ref)
        if shape["Name"] not in _DRIVERS:
            shape["Containers"] = self._attached(shape["Id"])
        return shape

    def _attached(self, network_id: str) -> dict:
        out = {}
        for ep in self.net.ipam.endpoints(network_id=network_id):
            rec = self.store.get(ep.container_id)
            out[ep.container_id] = {"Name": rec["name"] if rec else "", "EndpointID": endpoint_id(ep),
                                    "MacAddress": ep.mac, "IPv4Address": f"{ep.ip}/{ep.prefixlen}", "IPv6Address": ""}
        return out

    def network_create(self, body: dict) -> dict:
        body = body or {}
        name = body.get("Name") or ""
        if not name:
            raise InvalidParameter("network name cannot be empty")
        driver = body.get("Driver") or "bridge"
        if name in netconfig.BUILTIN_NETWORKS:
            raise Forbidden(f"{name} is a pre-defined network and cannot be created")
        if driver != "bridge":
            if driver in ("host", "null", "overlay", "macvlan", "ipvlan"):
                raise Forbidden(f"only one instance of \"{driver}\" network is allowed" if driver in ("host", "null")
                                else f"network driver {driver} is not supported by sampan (bridge only)")
            raise NotFound(f"plugin \"{driver}\" not found")
        v4: list[dict] = []
        v6: list[dict] = []
        for c in ((body.get("IPAM") or {}).get("Config") or []):
            (v6 if ":" in (c.get("Subnet") or "") else v4).append(c)
        if len(v4) > 1 or len(v6) > 1:
            raise InvalidParameter("one IPv4 and one IPv6 IPAM config at most are supported by sampan")
        if v6 and not body.get("EnableIPv6"):
            raise InvalidParameter("an IPv6 subnet needs --ipv6 (EnableIPv6)")
        cfg = v4[0] if v4 else {}
        cfg6 = v6[0] if v6 else {}
        if any(n.name == name for n in self.net.ipam.networks()):  # (by name only, not an id prefix)
            raise Conflict(f"network with name {name} already exists")
        net = self.net.run(lambda: self.net.manager.create_network(
            name, subnet=cfg.get("Subnet") or "", gateway=cfg.get("Gateway") or "", ip_range=cfg.get("IPRange") or "",
            internal=bool(body.get("Internal")), options=body.get("Options") or {}, labels=body.get("Labels") or {},
            enable_ipv6=bool(body.get("EnableIPv6")), subnet6=cfg6.get("Subnet") or "", gateway6=cfg6.get("Gateway") or ""))
        self.events.emit("network", "create", net.id, {"name": net.name, "type": net.driver})
        return {"Id": net.id, "Warning": ""}

    def network_remove(self, ref: str) -> None:
        shape = self._find_network(ref)
        name = shape["Name"]
        if name in netconfig.BUILTIN_NETWORKS:
            raise Forbidden(f"{name} is a pre-defined network and cannot be removed")
        if any(r for r in self.store.all() if name in (r.get("networks") or {}) and self._status(r) in LIVE):
            raise Forbidden(f"error while removing network: network {name} id {shape['Id']} has active endpoints")
        try:
            self.net.run(self.net.manager.remove_network, shape["Id"])
        except Conflict as e:
            raise Forbidden(str(e)) from None
        for r in self.store.all():  # (created and stopped containers forget it, as with dockerd)
            if name in (r.get("networks") or {}):
                self.store.update_networks(r["id"], lambda nets: nets.pop(name, None))
        self.events.emit("network", "destroy", shape["Id"], {"name": name, "type": shape["Driver"]})

    def network_prune(self, filters: _filters.Filters | None = None) -> dict:
        filters = filters or {}
        _filters.accept(filters, _PRUNE_FILTERS)
        until = _filters.time_filter(filters, "until")
        wanted = {name for r in self.store.all() for name in (r.get("networks") or {})}
        deleted = []
        for net in self.net.ipam.networks():
            if net.name in netconfig.BUILTIN_NETWORKS or net.name in wanted or \
                    (until is not None and net.created > until) or not _filters.labels_match(net.labels, filters):
                continue
            try:
                self.network_remove(net.id)
                deleted.append(net.name)
            except (Forbidden, NotFound):
                pass
        return {"NetworksDeleted": deleted or None}

    def network_connect(self, ref: str, body: dict) -> None:
        body = body or {}
        shape = self._find_network(ref)
        name = shape["Name"]
        rec = self._get(body.get("Container") or "")
        cid = rec["id"]
        mode = netconfig.mode_of(rec["host_config"])
        if netconfig.kind_of(mode) != "network" or name in _DRIVERS:
            raise InvalidParameter(f"container cannot be disconnected from host network or connected to host network"
                                   if "host" in (name, mode) else
                                   f"container sharing network namespace with another container or host cannot be "
                                   f"connected to any other network")
        cfg = netconfig.endpoint_configs({"NetworkingConfig": {"EndpointsConfig": {name: body.get("EndpointConfig") or {}}}},
                                         name)[name]
        with self._lock(cid):
            rec = self._get(cid)
            if name in (rec.get("networks") or {}):
                raise Forbidden(f"endpoint with name {rec['name']} already exists in network {name}")

            def add(nets: dict) -> None:
                nets[name] = cfg
            if self._status(rec) in LIVE:
                eps = [*self.net.endpoints(cid), self.net.connect_running(cid, name, cfg)]
                self.store.update_networks(cid, add)
                rec = self._get(cid)
                nets = self._networks_by_id()
                self.net.write_files(self.cdir(cid), rec["config"], rec["host_config"], eps, nets)
                self.net.attach_dns(cid, eps, nets, rec["host_config"].get("Dns"))
            else:
                self.store.update_networks(cid, add)
        self.events.emit("network", "connect", shape["Id"], {"container": cid, "name": name, "type": shape["Driver"]})

    def network_disconnect(self, ref: str, body: dict) -> None:
        body = body or {}
        shape = self._find_network(ref)
        name = shape["Name"]
        rec = self._get(body.get("Container") or "")
        cid = rec["id"]
        with self._lock(cid):
            rec = self._get(cid)
            if name not in (rec.get("networks") or {}):
                if name in _DRIVERS or netconfig.mode_of(rec["host_config"]) == name:
                    raise InvalidParameter(f"container cannot be disconnected from host network or connected to host network"
                                           if name == "host" else f"container {cid} is not connected to network {name}")
                raise Forbidden(f"container {cid} is not connected to network {name}")
            if self._status(rec) in LIVE:
                self.net.disconnect_running(cid, name)
            self.store.update_networks(cid, lambda nets: nets.pop(name, None))
            if self._status(rec) in LIVE:
                rec = self._get(cid)
                self.net.write_files(self.cdir(cid), rec["config"], rec["host_config"], self.net.endpoints(cid),
                                     self._networks_by_id())
        self.events.emit("network", "disconnect", shape["Id"], {"container": cid, "name": name, "type": shape["Driver"]})
