"""Container create: the config merged from the image and the request, the rootfs, volumes
and the OCI bundle; and the rootfs mount create leaves for the start that usually follows."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import threading
import time
from typing import Any

from ...image.store import ImageError
from ...logs import jsonfile
from ...runtime.fsutil import atomic_write, mkdir_all_in, secure_join
from ...timefmt import ZERO_TIME
from .. import links as _links
from .. import names as _names
from .. import netconfig
from .. import restart as _restart
from .. import spec as _spec
from ..bodytypes import check_create_body
from ..errors import Conflict, EngineError, InvalidParameter, NotFound
from ..mounts import parse_mounts
from ..store import NameTaken
from .base import EngineBase
from .state import STOPPED, Status, status_of

IDLE_MOUNT_SECONDS = 2.0  # how long the rootfs create mounted waits for the container's start

LOG_DRIVERS = ("json-file", "none")
# What dockerd also knows: a typo gets dockerd's message, these an honest refusal.
_DOCKERD_LOG_DRIVERS = ("local", "syslog", "journald", "gelf", "fluentd", "awslogs", "splunk", "etwlogs",
                        "gcplogs", "logentries")
_JSON_FILE_OPTIONS = ("max-size", "max-file", "compress", "labels", "labels-regex", "env", "env-regex", "tag")


def log_config(requested: dict | None) -> dict:
    """HostConfig.LogConfig as dockerd stores it ({"Type": "json-file", "Config": {}} when unset);
    raises InvalidParameter with dockerd's messages for a driver or an option it cannot take."""
    requested = requested or {}
    driver = requested.get("Type") or "json-file"
    options = dict(requested.get("Config") or {})
    if driver not in LOG_DRIVERS:
        if driver in _DOCKERD_LOG_DRIVERS:
            raise InvalidParameter(f"log driver {driver} is not supported by sampan (json-file or none)")
        raise InvalidParameter(f'error looking up logging plugin {driver}: plugin "{driver}" not found')
    for key in options:
        if driver == "none" or key not in _JSON_FILE_OPTIONS:
            raise InvalidParameter(f"unknown log opt '{key}' for {driver} log driver")
    try:
        jsonfile.size_option(options.get("max-size"))
        jsonfile.count_option(options.get("max-file"))
    except ValueError as e:
        raise InvalidParameter(str(e)) from None
    return {"Type": driver, "Config": options}


class CreateMixin(EngineBase):
    def create(self, body: dict, name: str | None = None) -> str:
        body = dict(body or {})
        check_create_body(body)
        hc = dict(body.get("HostConfig") or {})
        if name:
            if not _names.valid(name):
                raise InvalidParameter(f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
            name = name.lstrip("/")
        image_ref = body.get("Image") or ""
        if not image_ref:
            raise InvalidParameter("config cannot be empty in order to create a container")
        try:
            img = self.images.resolve(image_ref)
        except ImageError as e:
            if getattr(e, "status", 500) == 404:
                raise NotFound(f"No such image: {image_ref}") from None
            raise InvalidParameter(str(e)) from None
        cid = secrets.token_hex(32)
        network = netconfig.mode_of(hc)
        if network == "bridge" and not self.net.default_bridge:
            if (hc.get("NetworkMode") or "default") != "default":
                raise NotFound("network bridge not found")
            # (sampand --bridge none: containers that name no network get only lo)
            network = "none"
            requested = (body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}
            body["NetworkingConfig"] = {"EndpointsConfig": {
                k: v for k, v in requested.items() if k not in ("default", "bridge")}}
        target = self._network_target(network)
        endpoints = netconfig.endpoint_configs(body, network)
        for net_name in endpoints:
            if net_name != "bridge":
                self.net.get_network(net_name)  # (NotFound: "network X not found")
        if network == "host" and not body.get("Hostname"):
            body["Hostname"] = os.uname().nodename  # Docker: a host-network container has the host's name
        # (each raises InvalidParameter for what it cannot take)
        config = _spec.merge_config(img.config, body, cid)
        hc["RestartPolicy"] = _restart.validate(hc.get("RestartPolicy"), bool(hc.get("AutoRemove")))
        mounts = parse_mounts(hc)
        _spec.capabilities(hc)
        _spec.security_options(hc)
        _spec.resources(hc)
        _spec.rlimits(hc)
        _spec.parse_signal(config.get("StopSignal"))
        netconfig.port_mappings(config, hc)  # (checked now, published at start)
        netconfig.extra_hosts(hc, "0.0.0.0")
        # (Docker 23+ stores the default as "bridge"; another container by its full id)
        hc["NetworkMode"] = f"container:{target['id']}" if target is not None else network
        hc["LogConfig"] = log_config(hc.get("LogConfig"))
        hc["Runtime"] = hc.get("Runtime") or self.default_runtime
        if hc["Runtime"] not in self.runtimes:
            raise InvalidParameter(f"unknown or invalid runtime name: {hc['Runtime']}")
        # Image VOLUMEs not covered by a mount become anonymous volumes.
        covered = {m["Destination"] for m in mounts}
        for dest in sorted((config.get("Volumes") or {}).keys()):
            d = os.path.normpath(dest)
            if d not in covered:
                mounts.append({"Type": "volume", "Name": "", "Source": "", "Destination": d, "RW": True,
                               "Mode": "", "Propagation": "", "Anonymous": True})
        taken_name = name or _names.generate(self.store.names_taken())
        if hc.get("Links"):  # (each must name a container: dockerd's message otherwise)
            stored = []
            for entry in hc["Links"]:
                target_name = _links.parse(entry)[0]
                try:
                    target = self._get(target_name)
                except NotFound as e:
                    raise InvalidParameter(f"could not get container for {target_name}: {e}") from None
                stored.append(_links.stored(entry, taken_name, target["name"]))
            hc["Links"] = stored
        cdir = self.cdir(cid)
        undo: list[Any] = []
        made_volumes: list[str] = []
        try:
            os.makedirs(cdir, mode=0o711)
            undo.append(lambda: shutil.rmtree(cdir, ignore_errors=True))
            try:
                ms = self.images.prepare_rootfs(cid, img.id)
            except Exception as e:
                raise EngineError(f"failed to prepare the rootfs: {e}") from None
            undo.append(lambda: self.images.snapshots.remove(cid))
            rootfs = ms.rootfs
            for m in mounts:
                if m["Type"] == "volume":
                    existed = bool(m.get("Name")) and self.store.volume(m["Name"]) is not None
                    v = self.volumes.create(m.get("Name") or "", labels=m.get("Labels"),
                                            anonymous=not m.get("Name"))
                    if not existed:
                        made_volumes.append(v["Name"])
                    m["Name"], m["Source"], m["Driver"] = v["Name"], v["Mountpoint"], "local"
                    if not m.get("NoCopy"):
                        self.volumes.copy_up(rootfs, m["Destination"], v["Mountpoint"])
                elif m["Type"] == "bind":
                    if not os.path.exists(m["Source"]):
                        if m.get("CreateSource"):
                            os.makedirs(m["Source"], exist_ok=True)
                        else:
                            raise InvalidParameter(f"invalid mount config for type \"bind\": bind source path "
                                                   f"does not exist: {m['Source']}")
            if config.get("WorkingDir"):
                mkdir_all_in(rootfs, secure_join(rootfs, config["WorkingDir"]))
            # (rewritten at start, when the container has its addresses)
            self.net.write_files(cdir, config, hc, [], {})
            oci = _spec.build(container_id=cid, config=config, host_config=hc, rootfs=rootfs,
                              container_dir=cdir, mounts=mounts,
                              netns_path=self.net.spec_path(cid, network, target))
            os.makedirs(self._bundle(cid), mode=0o711)
            atomic_write(os.path.join(self._bundle(cid), "config.json"), json.dumps(oci).encode(), 0o600)
            path, args = _spec.path_and_args(config)
            rec = {"id": cid, "name": taken_name, "image_id": img.id, "image_ref": image_ref,
                   "created": time.time(), "config": config, "host_config": hc,
                   "mounts": mounts, "networks": endpoints,
                   "state": {"Status": Status.CREATED.value, "Pid": 0, "ExitCode": 0, "Error": "", "StartedAt": ZERO_TIME,
                             "FinishedAt": ZERO_TIME, "OOMKilled": False, "RestartCount": 0,
                             "ManuallyStopped": False, "Path": path, "Args": args, "Paused": False}}
            try:
                self.store.add_container(rec)
            except NameTaken as e:
                raise Conflict(f"Conflict. The container name \"/{e.name}\" is already in use by container "
                               f"\"{e.owner}\". You have to remove (or rename) that container to be able to "
                               "reuse that name.") from None
            # Stopped containers keep no mount: start mounts the rootfs again (this one stays a
            # few seconds for the start that usually follows).
            self._unmount_later(cid)
        except BaseException:
            for fn in reversed(undo):
                try:
                    fn()
                except Exception:  # noqa: BLE001
                    pass
            for v in made_volumes:
                try:
                    self.volumes.remove(v, force=True)
                except Exception:  # noqa: BLE001
                    pass
            raise
        self._emit(rec, "create")
        return cid

    def _network_target(self, mode: str) -> dict | None:
        """The container a ``container:ID`` mode joins (it must exist and have a namespace of
        its own), else None."""
        if netconfig.kind_of(mode) != "container":
            return None
        ref = mode.split(":", 1)[1]
        target = self._get(ref)
        if netconfig.kind_of(netconfig.mode_of(target["host_config"])) == "container":
            raise InvalidParameter(f"cannot join the network of container {ref}: it shares another container's")
        return target

    def _unmount_later(self, cid: str) -> None:
        with self._locks_lock:
            self._idle_mounts[cid] = time.monotonic() + IDLE_MOUNT_SECONDS
            if self._janitor is None and not self._closed:
                self._janitor = threading.Thread(target=self._janitor_loop, name="unmount-idle", daemon=True)
                self._janitor.start()

    def _janitor_loop(self) -> None:
        while True:
            with self._locks_lock:
                if not self._idle_mounts or self._closed:
                    self._janitor = None
                    return
                first = min(self._idle_mounts.values())
            time.sleep(max(0.05, first - time.monotonic() + 0.01))
            self._unmount_idle()

    def _unmount_idle(self, everything: bool = False) -> None:
        """Unmounts the rootfs create left mounted once their time is up, unless a start or
        an attach has taken them over."""
        now = time.monotonic()
        with self._locks_lock:
            due = [cid for cid, t in self._idle_mounts.items() if everything or t <= now]
            for cid in due:
                del self._idle_mounts[cid]
        for cid in due:
            try:
                if self.store.get(cid) is None:
                    continue
                with self._lock(cid):
                    rec = self.store.get(cid)
                    if rec is not None and cid not in self._prepared and cid not in self._removing and \
                            status_of(rec["state"]) in STOPPED:
                        self._unmount(cid)
            except Exception:  # noqa: BLE001 - the store may be closing
                pass
