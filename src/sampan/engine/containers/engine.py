"""The Engine: containers (create, lifecycle, exec, inspect, streams), volumes, events and
system information, in Docker Engine API shapes (docs/ENGINE.md).

Processes live in the supervisor (``sampan.supervisor``); the engine keeps the model in
state.db and learns of exits through one subscription to the supervisor (exits.py), and of
those that happened while it was down from the supervisor's list and ``exit.json``.
"""
from __future__ import annotations

import os
import socket
import threading
from typing import Any, Iterator

from ...image.store import ImageStore
from ...supervisor.client import SupervisorError
from ...timefmt import ZERO_TIME
from .. import links as _links
from .. import restart as _restart
from ..errors import EngineError, InvalidParameter
from ..events import Events
from ..networking import Networking
from ..store import Store
from ..volumes import Volumes
from .base import BUILTIN_RUNTIME, time_arg
from .create import CreateMixin
from .exec import ExecMixin
from .exits import ExitsMixin
from .inspect import InspectMixin
from .lifecycle import LifecycleMixin
from .networks import NetworksMixin
from .state import ACTIVE, LIVE, Status, status_of
from .stats import StatsMixin
from .streams import StreamsMixin
from .system import SystemMixin


class Engine(CreateMixin, LifecycleMixin, ExitsMixin, ExecMixin, InspectMixin, StatsMixin, StreamsMixin,
             SystemMixin, NetworksMixin):
    def __init__(self, root: str, exec_root: str, images: ImageStore | None = None,
                 start_supervisor: bool = True, reconcile: bool = True,
                 runtimes: dict[str, dict] | None = None, default_runtime: str = BUILTIN_RUNTIME,
                 network_namespace: str | None = None, firewall: bool = True, default_bridge: bool = True,
                 bridge_subnet: str = "", bridge_gateway: str = "", ipv6: bool = False,
                 bridge_subnet6: str = "") -> None:
        """runtimes: OCI runtimes besides the built-in one, name -> {"path", "runtimeArgs"}
        (sampand's --add-runtime); default_runtime: for containers that name none.
        network_namespace: a namespace file the engine's networks live in (default: this
        process's); firewall: False leaves the firewall alone (no NAT, no published ports);
        default_bridge: False has no default network (containers that name none get only lo);
        bridge_subnet/bridge_gateway: the default network's (default: picked clear of the
        host's routes); ipv6: the default network has IPv6 too (bridge_subnet6, or a ULA /64)."""
        self.root = os.path.abspath(root)
        self.runtimes = {BUILTIN_RUNTIME: {"path": "sampan-runc"}, **(runtimes or {})}
        if default_runtime not in self.runtimes:
            raise InvalidParameter(f"unknown or invalid runtime name: {default_runtime}")
        self.default_runtime = default_runtime
        self.exec_root = os.path.abspath(exec_root)
        self.runtime_root = os.path.join(self.exec_root, "runtime")
        self.containers_dir = os.path.join(self.root, "containers")
        os.makedirs(self.containers_dir, mode=0o711, exist_ok=True)
        self.store = Store(self.root)
        self.events = Events()
        self._own_images = images is None
        self.images = images or ImageStore(self.root, in_use=self._image_in_use)
        if images is not None:
            images.in_use = self._image_in_use
        self.volumes = Volumes(self.root, self.store, self.events)
        self.net = Networking(self.root, self.exec_root, network_namespace, firewall, default_bridge,
                              bridge_subnet, bridge_gateway, ipv6, bridge_subnet6)
        self.net.name_of = lambda cid: (lambda rec: rec["name"] if rec else None)(self.store.get(cid))
        self.net.links_of = self._links_of
        self._exposed_cache = {}
        self.restarter = _restart.Restarter(self._restart_start)
        self._locks: dict[str, threading.RLock] = {}
        self._locks_lock = threading.Lock()
        self._changed = threading.Condition()
        self._sup_lock = threading.Lock()
        self._exit_pool = None
        self._subscription = None
        self._removal_waits = {}
        self._auto_remove_due = set()
        self._removing: set[str] = set()
        self._final_states: dict[str, dict] = {}  # the state of recently removed containers, for wait
        # Rootfs mounts made by create, kept until (monotonic) for a start; then unmounted.
        self._idle_mounts: dict[str, float] = {}
        self._janitor: threading.Thread | None = None
        self._files_cond = threading.Condition()
        self._files_pending = 0  # auto-removals whose files are still being removed
        # Containers the supervisor has created (init waiting for start) ahead of a start: an
        # attach before start does that, so the attacher sees the output from the first byte.
        self._prepared: dict[str, int] = {}
        self._closed = False
        self._sup_client = None
        self._start_supervisor = start_supervisor
        if reconcile:
            self.reconcile()

    def close(self) -> None:
        self._closed = True
        with self._files_cond:  # auto-removals finishing their files
            self._files_cond.wait_for(lambda: self._files_pending == 0, timeout=10)
        self._unmount_idle(everything=True)
        self.restarter.close()
        if self._subscription is not None:  # its reader thread ends (a close alone would not wake it)
            try:
                self._subscription.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._subscription.close()
        if self._exit_pool is not None:  # exits being handled finish with the store still open
            self._exit_pool.shutdown(wait=True, cancel_futures=True)
        if self._sup_client is not None:
            self._sup_client.close()
        self.net.close()
        self.store.close()
        if self._own_images:
            self.images.close()

    # ------------------------------------------------------------------ volumes
    def volume_create(self, body: dict | None = None) -> dict:
        body = body or {}
        return self.volumes.create(body.get("Name") or "", body.get("Driver") or "local", body.get("Labels"),
                                   body.get("DriverOpts"))

    def volume_list(self, filters: dict | None = None) -> dict:
        return self.volumes.list(filters)

    def volume_inspect(self, name: str) -> dict:
        return self.volumes.inspect(name)

    def volume_remove(self, name: str, force: bool = False) -> None:
        self.volumes.remove(name, force)

    def volume_prune(self, filters: dict | None = None) -> dict:
        return self.volumes.prune(filters)

    def events_stream(self, since: Any = None, until: Any = None, filters: dict | None = None,
                      stop: threading.Event | None = None) -> Iterator[dict]:
        return self.events.subscribe(time_arg(since), time_arg(until), filters, stop)

    events_ = events_stream

    def _links_of(self, cid: str) -> dict[str, str]:
        """alias -> id of the containers ``cid`` links to (for its embedded DNS)."""
        rec = self.store.get(cid)
        out = {}
        for entry in (rec["host_config"].get("Links") or []) if rec else []:
            name, alias = _links.parse(entry)
            found = self.store.find(name)
            if len(found) == 1:
                out[alias] = found[0]["id"]
        return out

    # ------------------------------------------------------------------ reconcile
    def _restore_networks(self) -> None:
        """Bridges and rules back after a reboot; nothing left of containers not running."""
        try:
            self.net.restore({r["id"] for r in self.store.all() if self._status(r) in LIVE})
            self._restore_dns()
        except (EngineError, OSError) as e:
            import logging
            logging.getLogger("sampan.engine").warning("restoring the networks failed: %s", e)

    def reconcile(self) -> None:
        """After a (re)start of the engine: sweep what removals cut short left, match state.db
        with the supervisor (subscribing to exits catches up with those that happened while
        the engine was down) and apply restart policies."""
        self._sweep_files()
        # Before anything can start: what a container recorded as running had stays (the
        # catch-up below releases it if it died meanwhile), the rest goes.
        self._restore_networks()
        recs = self.store.all()
        if any(self._status(r) in ACTIVE or
               (r["host_config"].get("RestartPolicy") or {}).get("Name") in ("always", "unless-stopped")
               for r in recs) or self.store.running_execs():
            # (otherwise nothing to match: the supervisor starts with the first container)
            first = self._sup_client is None
            try:
                self._sup()  # (the first connection catches up with the exits)
            except (SupervisorError, OSError):
                return
            if not first:
                self._catch_up()
        for rec in self.store.all():
            if status_of(rec["state"]) is Status.EXITED and rec["state"].get("StartedAt") != ZERO_TIME and \
                    _restart.restart_at_daemon_start(rec["host_config"].get("RestartPolicy") or {}, rec["state"]) \
                    and not self.restarter.pending(rec["id"]):
                try:
                    self.start(rec["id"])
                except EngineError:
                    pass
