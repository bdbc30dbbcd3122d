"""Containers as the API shows them: inspect, list with its filters, the status text."""
from __future__ import annotations

import os
import re
import time

from ...timefmt import ZERO_TIME, duration, parse_rfc3339, rfc3339
from .. import filters as _filters
from .. import netconfig
from .. import spec as _spec
from ..errors import InvalidParameter
from .base import BUILTIN_RUNTIME, EngineBase
from .state import ACTIVE, ALL, LIVE, Status, status_of


class InspectMixin(EngineBase):
    def _state_shape(self, rec: dict) -> dict:
        st, status = rec["state"], self._status(rec)
        return {"Status": status.value, "Running": status in ACTIVE, "Paused": status is Status.PAUSED,
                "Restarting": status is Status.RESTARTING, "OOMKilled": bool(st.get("OOMKilled")),
                "Dead": status is Status.DEAD, "Pid": int(st.get("Pid") or 0),
                "ExitCode": int(st.get("ExitCode") or 0), "Error": st.get("Error") or "",
                "StartedAt": st.get("StartedAt") or ZERO_TIME, "FinishedAt": st.get("FinishedAt") or ZERO_TIME}

    @staticmethod
    def _mount_shape(m: dict) -> dict:
        out = {"Type": m["Type"], "Source": m.get("Source") or "", "Destination": m["Destination"],
               "Mode": m.get("Mode") or "", "RW": bool(m.get("RW")), "Propagation": m.get("Propagation") or ""}
        if m["Type"] == "volume":
            out = {"Type": "volume", "Name": m.get("Name"), "Source": m.get("Source") or "",
                   "Destination": m["Destination"], "Driver": m.get("Driver") or "local", "Mode": m.get("Mode") or "",
                   "RW": bool(m.get("RW")), "Propagation": ""}
        return out

    def inspect(self, ref: str, size: bool = False) -> dict:
        rec = self._get(ref)
        cid, st, cfg = rec["id"], rec["state"], rec["config"]
        hc = dict(rec["host_config"])
        for k, v in (("Binds", None), ("NetworkMode", "bridge"), ("PortBindings", {}), ("AutoRemove", False),
                     ("VolumeDriver", ""), ("VolumesFrom", None), ("CapAdd", None), ("CapDrop", None),
                     ("Dns", []), ("DnsOptions", []), ("DnsSearch", []), ("ExtraHosts", None),
                     ("IpcMode", "private"), ("Privileged", False), ("PublishAllPorts", False),
                     ("ReadonlyRootfs", False), ("SecurityOpt", None), ("ShmSize", _spec.DEFAULT_SHM),
                     ("Memory", 0), ("MemorySwap", 0), ("NanoCpus", 0), ("CpuShares", 0), ("CpuPeriod", 0),
                     ("CpuQuota", 0), ("CpusetCpus", ""), ("CpusetMems", ""), ("PidsLimit", None),
                     ("Ulimits", None), ("Devices", []), ("Init", None), ("Tmpfs", None), ("Sysctls", None),
                     ("Mounts", None), ("OomKillDisable", False), ("GroupAdd", None), ("ConsoleSize", [0, 0]),
                     ("Runtime", BUILTIN_RUNTIME), ("LogConfig", {"Type": "json-file", "Config": {}})):
            hc.setdefault(k, v)
        hc["NetworkMode"] = netconfig.mode_of(hc)
        out = {
            "Id": cid,
            "Created": rfc3339(rec["created"]),
            "Path": st.get("Path", ""),
            "Args": st.get("Args", []),
            "State": self._state_shape(rec),
            "Image": rec["image_id"],
            "ResolvConfPath": os.path.join(self.cdir(cid), "resolv.conf"),
            "HostnamePath": os.path.join(self.cdir(cid), "hostname"),
            "HostsPath": os.path.join(self.cdir(cid), "hosts"),
            "LogPath": self._log_path(cid),
            "Name": "/" + rec["name"],
            "RestartCount": int(st.get("RestartCount") or 0),
            "Driver": "overlay2",
            "Platform": "linux",
            "MountLabel": "",
            "ProcessLabel": "",
            "AppArmorProfile": "",
            "ExecIDs": self.store.execs_of(cid) or None,
            "HostConfig": hc,
            "GraphDriver": {"Name": "overlay2", "Data": {"MergedDir": os.path.join(self.cdir(cid), "rootfs"),
                                                         "UpperDir": os.path.join(self.cdir(cid), "upper"),
                                                         "WorkDir": os.path.join(self.cdir(cid), "work")}},
            "Mounts": [self._mount_shape(m) for m in rec["mounts"]],
            "Config": {k: v for k, v in cfg.items()},
            "NetworkSettings": self._network_settings(rec, self._status(rec) in LIVE),
        }
        out["Config"]["Image"] = cfg.get("Image") or rec["image_ref"]
        return out

    def _status_text(self, rec: dict) -> str:
        """`docker ps`'s STATUS column."""
        st, status = rec["state"], self._status(rec)
        now = time.time()
        code = int(st.get("ExitCode") or 0)
        if status in LIVE:
            text = "Up " + duration(now - parse_rfc3339(st.get("StartedAt")))
            return text + " (Paused)" if status is Status.PAUSED else text
        if status is Status.RESTARTING:
            return f"Restarting ({code}) " + duration(now - parse_rfc3339(st.get("FinishedAt"))) + " ago"
        if status is Status.EXITED:
            return f"Exited ({code}) " + duration(now - parse_rfc3339(st.get("FinishedAt"))) + " ago"
        if status is Status.DEAD:
            return "Dead"
        if status is Status.REMOVING:
            return "Removal In Progress"
        return "Created"

    def list(self, all: bool = False, filters: dict[str, list[str]] | None = None, limit: int = -1,
             size: bool = False) -> list[dict]:
        filters = {k: (v if isinstance(v, list) else [v]) for k, v in (filters or {}).items()}
        out = []
        chosen = []
        for rec in self.store.all():
            status = self._status(rec)
            if not all and status not in ACTIVE and not filters.get("status"):
                continue
            if not self._filter(rec, filters):
                continue
            chosen.append(rec)
            if 0 < limit <= len(chosen):
                break
        networks = self._network_summaries(chosen)
        for rec in chosen:
            st, status = rec["state"], self._status(rec)
            path, args = st.get("Path", ""), st.get("Args", [])
            cmd = " ".join([path, *args]) if path else ""
            net_hc, net_settings, ports = networks[rec["id"]]
            out.append({
                "Id": rec["id"], "Names": ["/" + rec["name"]], "Image": rec["config"].get("Image") or rec["image_ref"],
                "ImageID": rec["image_id"], "Command": cmd, "Created": int(rec["created"]), "Ports": ports,
                "Labels": rec["config"].get("Labels") or {}, "State": status.value, "Status": self._status_text(rec),
                "HostConfig": net_hc, "NetworkSettings": net_settings,
                "Mounts": [self._mount_shape(m) for m in rec["mounts"]],
            })
        return out

    def _filter(self, rec: dict, filters: dict[str, list[str]]) -> bool:
        st = rec["state"]
        for key, values in filters.items():
            if not values:
                continue
            if key == "status":
                for v in values:
                    if v not in ALL:
                        raise InvalidParameter(f"invalid filter 'status={v}'")
                if self._status(rec).value not in values:
                    return False
            elif key == "name":
                if not any(re.search(v, "/" + rec["name"])
                           for v in values):
                    return False
            elif key == "id":
                if not any(rec["id"].startswith(v) for v in values):
                    return False
            elif key == "label":
                labels = rec["config"].get("Labels") or {}
                if not all(_filters.label_matches(labels, v) for v in values):
                    return False
            elif key == "exited":
                if status_of(st) is not Status.EXITED or str(st.get("ExitCode")) not in values:
                    return False
            elif key == "ancestor":
                if not any(v in (rec["image_ref"], rec["image_id"], rec["config"].get("Image"))
                           or rec["image_id"].split(":")[-1].startswith(v) for v in values):
                    return False
            elif key == "volume":
                if not any(m.get("Name") == v or m["Destination"] == v for m in rec["mounts"] for v in values):
                    return False
            elif key == "network":
                mode = netconfig.mode_of(rec["host_config"])
                if not any(v in (rec.get("networks") or {}) or v == mode for v in values):
                    return False
            elif key in ("before", "since", "health", "publish", "expose", "is-task"):
                continue
            else:
                raise InvalidParameter(f"invalid filter '{key}'")
        return True
