"""What every part of the Engine shares: the supervisor connection, per-container locks, the
change condition waiters sleep on, paths of a container's files, lookups and events."""
from __future__ import annotations

import json
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from ...runtime.registry import BUILTIN as BUILTIN_RUNTIME
from ...timefmt import parse_time_arg
from ..errors import EngineError, InvalidParameter, NotFound
from .state import ACTIVE, Status, check_transition, status_of

if TYPE_CHECKING:
    from ...image.store import ImageStore
    from ...supervisor.client import Client
    from ..events import Events
    from ..networking import Networking
    from ..restart import Restarter
    from ..store import Store
    from ..volumes import Volumes


def time_arg(value: Any) -> float | None:
    """since/until as the API passes them; a bad one is the caller's error."""
    try:
        return parse_time_arg(value)
    except ValueError as e:
        raise InvalidParameter(str(e)) from None


class EngineBase:
    """The state the Engine's parts (create, lifecycle, exec, inspect, streams) work on; the
    Engine sets it up in __init__."""

    root: str
    exec_root: str
    runtime_root: str
    containers_dir: str
    store: Store
    events: Events
    images: ImageStore
    volumes: Volumes
    net: Networking
    _exposed_cache: dict[str, list[str]]  # container id -> its exposed ports (networks.py)
    restarter: Restarter
    _locks: dict[str, threading.RLock]
    _locks_lock: threading.Lock
    _changed: threading.Condition
    _sup_lock: threading.Lock
    _removal_waits: dict[str, int]  # container -> how many `removed` waits are pending
    _auto_remove_due: set[str]  # exited AutoRemove containers waiting for a wait (exits.py)
    _removing: set[str]
    _final_states: dict[str, dict]
    _idle_mounts: dict[str, float]
    _janitor: threading.Thread | None
    _files_cond: threading.Condition
    _files_pending: int
    _prepared: dict[str, int]
    _closed: bool
    _sup_client: Client | None
    _start_supervisor: bool
    runtimes: dict[str, dict]  # name -> {"path", "runtimeArgs"}, as dockerd's info lists them
    default_runtime: str
    _subscribe: Callable[[], None]  # exits.ExitsMixin
    _catch_up: Callable[[], None]  # exits.ExitsMixin
    _network_up: Callable[[dict], None]  # networks.NetworksMixin
    _network_down: Callable[[dict], None]  # networks.NetworksMixin
    _network_settings: Callable[[dict, bool], dict]  # networks.NetworksMixin
    _restore_dns: Callable[[], None]  # networks.NetworksMixin
    _network_summaries: Callable[[list[dict]], dict[str, tuple[dict, dict, list[dict]]]]  # networks.NetworksMixin

    def _sup(self) -> Client:
        """The supervisor's client; the first call subscribes to exits (see exits.py) before
        anything can be started through it."""
        from ...supervisor.client import Client, ensure_running
        if self._sup_client is None:
            with self._sup_lock:
                if self._sup_client is not None:
                    return self._sup_client
                if self._start_supervisor:
                    ensure_running(self.root, self.exec_root)
                self._subscribe()
                client = self._sup_client = Client(self.exec_root)
            self._catch_up()  # (what ended while no engine listened: nothing is missed from now on)
            return client
        return self._sup_client

    def _runtime_of(self, rec: dict) -> dict | None:
        """The supervisor's `runtime` field for the container: None for the built-in runtime,
        else {"name", "path", "args"} of the runtime its HostConfig.Runtime names."""
        name = rec["host_config"].get("Runtime") or BUILTIN_RUNTIME
        if name == BUILTIN_RUNTIME:
            return None
        conf = self.runtimes.get(name)
        if conf is None:  # (configured when it was created, not by this daemon)
            raise EngineError(f"unknown or invalid runtime name: {name}")
        return {"name": name, "path": conf.get("path"), "args": list(conf.get("runtimeArgs") or [])}

    def _status(self, rec: dict) -> Status:
        """The container's state as operations and the API see it: removing while a removal
        is under way (that state is never stored: the record goes at the end of it)."""
        return Status.REMOVING if rec["id"] in self._removing else status_of(rec["state"])

    def _set_status(self, cid: str, target: Status, **fields: Any) -> dict:
        """Moves the container to `target` (with other state fields) if the state machine
        allows it from the state it is in; returns the new state."""
        def check(current: dict) -> None:
            check_transition(cid, status_of(current), target)
        return self.store.update_state(cid, check=check, Status=target.value, **fields)

    def _call(self, op: str, **fields: Any) -> dict:
        from ...supervisor.client import SupervisorError
        try:
            return self._sup().call(op, **fields)
        except SupervisorError as e:
            if e.code == "unavailable" and self._start_supervisor:
                from ...supervisor.client import ensure_running
                ensure_running(self.root, self.exec_root)
                return self._sup().call(op, **fields)
            raise

    def _lock(self, cid: str) -> threading.RLock:
        with self._locks_lock:
            lk = self._locks.get(cid)
            if lk is None:
                lk = self._locks[cid] = threading.RLock()
            return lk

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def cdir(self, cid: str) -> str:
        return os.path.join(self.containers_dir, cid)

    def _bundle(self, cid: str) -> str:
        return os.path.join(self.cdir(cid), "bundle")

    def _log_path(self, cid: str) -> str:
        return os.path.join(self.cdir(cid), f"{cid}-json.log")

    def _get(self, ref: str) -> dict:
        found = self.store.find(ref) if ref else []
        if not found:
            raise NotFound(f"No such container: {ref}")
        if len(found) > 1:
            raise InvalidParameter(f"Multiple IDs found with provided prefix: {ref}")
        return found[0]

    def _image_in_use(self, image_id: str) -> list[tuple[str, bool]]:
        return [(r["id"], status_of(r["state"]) in ACTIVE)
                for r in self.store.all() if r["image_id"] == image_id]

    def _emit(self, rec: dict, action: str, **extra: str) -> None:
        attrs = {"image": rec["config"].get("Image") or rec["image_ref"], "name": rec["name"]}
        attrs.update({k: str(v) for k, v in (rec["config"].get("Labels") or {}).items()})
        attrs.update(extra)
        self.events.emit("container", action, rec["id"], attrs)

    def _unmount(self, cid: str) -> None:
        try:
            if self.images.snapshots.mounted(cid):
                self.images.snapshots.unmount(cid)
        except Exception:  # noqa: BLE001
            pass

    def _exit_record(self, cid: str) -> dict | None:
        try:
            with open(os.path.join(self.cdir(cid), "exit.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def _signal(self, cid: str, sig: int, all_procs: bool = False) -> None:
        from ...supervisor.client import SupervisorError
        try:
            self._call("kill", container=cid, signal=int(sig), all=all_procs)
        except SupervisorError as e:
            if e.code not in ("conflict", "not_found"):
                raise EngineError(str(e)) from None

    def _wait_status(self, cid: str, statuses: frozenset[Status], timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while True:
                rec = self.store.get(cid)
                if rec is None or status_of(rec["state"]) in statuses:
                    return True
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._changed.wait(0.2 if left is None else min(0.2, left))
