"""Container lifecycle: start (through the supervisor), stop, kill, restart, pause, remove,
rename and wait. (Exits and restart policies: exits.py.)"""
from __future__ import annotations

import errno
import os
import signal as _signal
import time
from typing import Any

from ...runtime.fsutil import remove_tree
from ...timefmt import ZERO_TIME, parse_rfc3339, rfc3339
from .. import filters as _filters
from .. import names as _names
from .. import spec as _spec
from ..errors import Conflict, EngineError, InvalidParameter, NotFound, NotModified
from ..store import NameTaken
from .base import EngineBase
from .state import LIVE, STOPPED, Status, require, status_of

DEFAULT_STOP_TIMEOUT = 10
_AFTER_EXIT = frozenset({Status.EXITED, Status.DEAD, Status.RESTARTING})  # what an exit leaves
_PRUNE_FILTERS = frozenset({"until", "label", "label!"})


def _go_errors(msg: str) -> str:
    """errno texts as Go (runc, dockerd) words them, lower case: the docker CLI picks its exit
    code (126 "permission denied"/"is a directory", 127 "no such file or directory") from them."""
    for n in (errno.EACCES, errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.ENOEXEC):
        text = os.strerror(n)
        msg = msg.replace(text, text.lower())
    return msg


class LifecycleMixin(EngineBase):
    def start(self, ref: str) -> None:
        rec = self._get(ref)
        cid = rec["id"]
        with self._lock(cid):
            rec = self._get(cid)
            require("start", self._status(rec), ref, cid, rec["name"])
            self.restarter.cancel(cid)
            failure: EngineError | None = None
            try:
                self._start_locked(rec)
            except EngineError as e:
                if not rec["host_config"].get("AutoRemove"):
                    raise
                failure = e
        if failure is not None:
            # Like dockerd: a container that was to be removed when it exits goes when its
            # start fails too (`docker run --rm` waits for that removal).
            try:
                self.remove(cid, force=True, volumes=True)
            except EngineError:
                pass
            raise failure
        self._emit(rec, "start")

    def _restart_start(self, cid: str) -> None:
        rec = self.store.get(cid)
        if rec is None or self._closed:
            return
        with self._lock(cid):
            rec = self.store.get(cid)
            if rec is None or self._status(rec) is not Status.RESTARTING:
                return
            self.store.update_state(cid, RestartCount=int(rec["state"].get("RestartCount") or 0) + 1)
            rec = self.store.get(cid)
            try:
                self._start_locked(rec)
            except EngineError:
                return
        self._emit(rec, "start")

    def _prepare_locked(self, rec: dict) -> int:
        """Has the supervisor create the container (its init set up and waiting for start),
        unless that is done already; returns the init's pid. Raises SupervisorError, or
        EngineError when the rootfs cannot be mounted."""
        from ...supervisor.client import SupervisorError
        cid = rec["id"]
        pid = self._prepared.get(cid)
        if pid:
            return pid
        self._idle_mounts.pop(cid, None)
        cfg, hc = rec["config"], rec["host_config"]
        self._network_up(rec)
        try:
            self.images.snapshots.mount(cid)
        except Exception as e:  # noqa: BLE001
            self._network_down(rec)
            raise EngineError(f"failed to mount the rootfs: {e}") from None
        log = hc.get("LogConfig") or {}
        log_cfg = log.get("Config") or {}
        runtime = self._runtime_of(rec)
        fields: dict[str, Any] = {
            "container": cid, "bundle": self._bundle(cid), "tty": bool(cfg.get("Tty")),
            "stdin": bool(cfg.get("OpenStdin"))}
        if log.get("Type", "json-file") == "json-file":  # (the `none` driver: no log file at all)
            fields["log"] = {"path": self._log_path(cid), "max_size": log_cfg.get("max-size") or None,
                             "max_file": int(log_cfg.get("max-file") or 0) or None}
        if runtime is not None:
            fields["runtime"] = runtime
        size = hc.get("ConsoleSize")
        if cfg.get("Tty") and isinstance(size, list) and len(size) == 2 and all(size):
            fields["console_size"] = size
        try:
            try:
                created = self._call("create", **fields)
            except SupervisorError as e:
                if e.code != "conflict":
                    raise
                # A leftover of an earlier run: the supervisor's, or (after a supervisor
                # restart) one only the runtime still knows.
                self._discard_leftover(cid, runtime)
                created = self._call("create", **fields)
        except SupervisorError:
            self._unmount(cid)
            self._network_down(rec)
            raise
        pid = int(created.get("pid") or 0)
        self._prepared[cid] = pid
        return pid

    def _discard_leftover(self, cid: str, runtime: dict | None = None) -> None:
        """Deletes what the supervisor (or, after a supervisor restart, only the container's
        runtime) still holds of an earlier run."""
        from ...supervisor.client import SupervisorError
        self._prepared.pop(cid, None)
        try:
            self._call("delete", container=cid, **({"runtime": runtime} if runtime else {}))
        except SupervisorError:
            pass

    def _start_locked(self, rec: dict) -> None:
        from ...supervisor.client import SupervisorError
        cid = rec["id"]
        try:
            reused = cid in self._prepared
            pid = self._prepare_locked(rec)
            try:
                reply = self._call("start", container=cid)
            except SupervisorError as e:
                if not reused or e.code not in ("not_found", "conflict"):
                    raise
                # What an attach prepared is gone (the supervisor restarted, the init was
                # killed): create it again.
                self._discard_leftover(cid)
                self._network_down(rec)
                pid = self._prepare_locked(rec)
                reply = self._call("start", container=cid)
        except EngineError:
            self._prepared.pop(cid, None)
            raise
        except SupervisorError as e:
            self._prepared.pop(cid, None)
            try:
                self._call("delete", container=cid)
            except SupervisorError:
                pass
            self._unmount(cid)
            self._network_down(rec)
            msg = _go_errors(str(e))
            low = msg.lower()
            code = 127 if ("no such file" in low or "not found" in low) else 126 if "permission denied" in low else 128
            # (a start that fails leaves a container that never ran created, as dockerd does)
            never_ran = rec["state"].get("StartedAt") == ZERO_TIME
            self._set_status(cid, Status.CREATED if never_ran else Status.EXITED, ExitCode=code, Error=msg, Pid=0)
            self._notify()
            raise EngineError(f"failed to create task for container: {msg}") from None
        self._prepared.pop(cid, None)
        self._set_status(cid, Status.RUNNING, Pid=pid, ExitCode=0, Error="", OOMKilled=False,
                         StartedAt=reply.get("started_at") or rfc3339(), FinishedAt=ZERO_TIME,
                         ManuallyStopped=False, Paused=False)
        self._notify()

    # ------------------------------------------------------------------ stop / kill / restart
    def stop(self, ref: str, timeout: int | None = None, signal: str | int | None = None) -> None:
        rec = self._get(ref)
        cid = rec["id"]
        with self._lock(cid):  # (the lock an exit's restart decision is made under)
            self.store.update_state(cid, ManuallyStopped=True)
            rec = self._get(cid)
            if self.restarter.cancel(cid) or self._status(rec) is Status.RESTARTING:
                self._set_status(cid, Status.EXITED)
                self._notify()
                return
        require("stop", self._status(rec), ref, cid, rec["name"])
        sig = _spec.parse_signal(signal if signal is not None else rec["config"].get("StopSignal"))
        if timeout is None or timeout == "":
            timeout = rec["config"].get("StopTimeout", DEFAULT_STOP_TIMEOUT)
        timeout = int(timeout)
        if self._status(rec) is Status.PAUSED:
            self._thaw(cid)
        self._signal(cid, sig)
        if timeout < 0 or not self._wait_status(cid, STOPPED, float(timeout)):
            self._signal(cid, _signal.SIGKILL, all_procs=True)
            if not self._wait_status(cid, STOPPED, 30.0):
                raise EngineError(f"container {cid} did not stop after SIGKILL")
        self._emit(rec, "stop")

    def kill(self, ref: str, signal: str | int | None = None) -> None:
        rec = self._get(ref)
        cid = rec["id"]
        sig = _spec.parse_signal(signal or "SIGKILL")
        require("kill", self._status(rec), ref, cid, rec["name"])
        if self._status(rec) is Status.PAUSED and sig == _signal.SIGKILL:
            self._signal(cid, sig)
            self._thaw(cid)
        else:
            self._signal(cid, sig)
        self._emit(rec, "kill", signal=str(sig))
        if sig == _signal.SIGKILL:
            self._wait_status(cid, STOPPED | {Status.RESTARTING}, 10.0)

    def restart(self, ref: str, timeout: int | None = None, signal: str | int | None = None) -> None:
        rec = self._get(ref)
        cid = rec["id"]
        try:
            self.stop(cid, timeout, signal)
        except NotModified:
            pass
        self.start(cid)
        self._emit(self._get(cid), "restart")

    # ------------------------------------------------------------------ pause
    def _thaw(self, cid: str) -> None:
        from ...supervisor.client import SupervisorError
        try:
            self._call("resume", container=cid)
        except SupervisorError:
            pass  # not paused, or exited meanwhile
        with self._lock(cid):  # (an exit handled meanwhile has made it exited: it stays so)
            rec = self.store.get(cid)
            if rec is not None and status_of(rec["state"]) is Status.PAUSED:
                self._set_status(cid, Status.RUNNING, Paused=False)

    def pause(self, ref: str) -> None:
        self._freeze(ref, "pause", "pause", Status.PAUSED)

    def unpause(self, ref: str) -> None:
        self._freeze(ref, "unpause", "resume", Status.RUNNING)

    def _freeze(self, ref: str, action: str, op: str, target: Status) -> None:
        """pause (freeze the container's cgroup) or unpause (thaw it) through the supervisor."""
        from ...supervisor.client import SupervisorError
        rec = self._get(ref)
        cid = rec["id"]
        with self._lock(cid):
            require(action, self._status(self._get(cid)), ref, cid, rec["name"])
            try:
                self._call(op, container=cid)
            except SupervisorError as e:
                raise EngineError(f"cannot {action} container {cid}: {e}") from None
            self._set_status(cid, target, Paused=target is Status.PAUSED)
        self._emit(rec, action)

    # ------------------------------------------------------------------ remove / rename
    def remove(self, ref: str, force: bool = False, volumes: bool = False, _files_after: bool = False) -> None:
        """Removes the container. With _files_after (an auto-remove), the record goes first and
        its files (rootfs mount, upper dir, logs) right after the waiters have been told: what
        `docker run --rm` waits for is the container's removal, the unmount and rm -rf need not
        hold it up; a daemon killed in between leaves files that reconcile() sweeps."""
        from ...supervisor.client import SupervisorError
        rec = self._get(ref)
        cid = rec["id"]
        status = self._status(rec)
        if not force:
            require("remove", status, ref, cid, rec["name"])
        with self._locks_lock:
            if cid in self._removing:
                raise Conflict(f"removal of container {cid} is already in progress")
            self._removing.add(cid)
        try:
            self.restarter.cancel(cid, forget=True)
            if status in LIVE:
                self.store.update_state(cid, ManuallyStopped=True)
                if status is Status.PAUSED:
                    self._signal(cid, _signal.SIGKILL, all_procs=True)
                    self._thaw(cid)
                self._signal(cid, _signal.SIGKILL, all_procs=True)
                self._wait_status(cid, STOPPED | {Status.RESTARTING}, 10.0)
            with self._lock(cid):
                self._prepared.pop(cid, None)
                self._network_down(rec)  # (its ports are free for the next container at once)
                if not _files_after:
                    try:
                        self._call("delete", container=cid)
                    except SupervisorError:
                        pass
                    try:
                        self.images.snapshots.remove(cid)
                    except Exception as e:  # noqa: BLE001
                        self._set_status(cid, Status.DEAD, Error=str(e))
                        raise EngineError(f"unable to remove filesystem for {cid}: {e}") from None
                    remove_tree(self.cdir(cid))
                final = self.store.get(cid)
                if final is not None:
                    self._final_states[cid] = final["state"]
                    while len(self._final_states) > 256:
                        self._final_states.pop(next(iter(self._final_states)))
                if _files_after:
                    with self._files_cond:
                        self._files_pending += 1
                self.store.delete_container(cid)
            for m in rec["mounts"]:
                if m.get("Type") == "volume" and volumes:
                    v = self.store.volume(m.get("Name") or "")
                    if v is not None and v["anonymous"]:
                        try:
                            self.volumes.remove(v["name"])
                        except EngineError:
                            pass
        finally:
            with self._locks_lock:
                self._removing.discard(cid)
                self._locks.pop(cid, None)
        self._notify()
        self._emit(rec, "destroy")
        if _files_after:
            try:
                self._remove_files(cid)
            finally:
                with self._files_cond:
                    self._files_pending -= 1
                    self._files_cond.notify_all()

    def prune(self, filters: _filters.Filters | None = None) -> dict:
        """Removes the containers that are not running (``docker container prune``): those
        created before ``until``, with every ``label`` and not all of the ``label!`` ones."""
        filters = filters or {}
        _filters.accept(filters, _PRUNE_FILTERS)
        until = _filters.time_filter(filters, "until")
        deleted = []
        for rec in self.store.all():
            if self._status(rec) not in STOPPED or (until is not None and rec["created"] > until) or \
                    not _filters.labels_match(rec["config"].get("Labels") or {}, filters):
                continue
            try:
                self.remove(rec["id"])
                deleted.append(rec["id"])
            except (Conflict, NotFound):
                pass  # started or removed meanwhile: not prunable
        return {"ContainersDeleted": deleted or None, "SpaceReclaimed": 0}

    def _remove_files(self, cid: str) -> None:
        """What is left of a container whose record is gone: its exited init in the supervisor
        (runtime state, cgroups), the rootfs (unmounted), upper and work dirs, the container
        directory."""
        from ...supervisor.client import SupervisorError
        try:
            self._call("delete", container=cid)
        except (SupervisorError, OSError):
            pass
        try:
            self.images.snapshots.remove(cid)
        except Exception:  # noqa: BLE001 - reconcile() tries again
            return
        remove_tree(self.cdir(cid))

    def _sweep_files(self) -> None:
        """Files of containers that have no record (a daemon killed during a removal)."""
        known = {r["id"] for r in self.store.all()}
        try:
            names = os.listdir(self.containers_dir)
        except OSError:
            return
        for name in names:
            if len(name) == 64 and name not in known and all(ch in "0123456789abcdef" for ch in name):
                self._remove_files(name)  # (the supervisor's delete clears the runtime's state too)

    def rename(self, ref: str, new_name: str) -> None:
        rec = self._get(ref)
        new = (new_name or "").lstrip("/")
        if not new or not _names.valid(new):
            raise InvalidParameter(f"Invalid container name ({new_name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        if new == rec["name"]:
            raise Conflict(f"Renaming a container with the same name as its current name")
        try:
            self.store.rename(rec["id"], new)
        except NameTaken as e:
            raise Conflict(f"Conflict. The container name \"/{e.name}\" is already in use by container "
                           f"\"{e.owner}\". You have to remove (or rename) that container to be able to reuse "
                           "that name.") from None
        self._emit(self._get(rec["id"]), "rename", oldName="/" + rec["name"])

    # ------------------------------------------------------------------ wait
    def wait(self, ref: str, condition: str = "not-running", timeout: float | None = None) -> dict:
        return self.wait_prepare(ref, condition, timeout)()

    def wait_prepare(self, ref: str, condition: str = "not-running", timeout: float | None = None):
        """Checks the container and the condition now (NotFound, InvalidParameter) and returns
        the blocking wait, which counts exits from this moment (the API answers a wait's headers
        before the client starts the container)."""
        rec = self._get(ref)
        condition = condition or "not-running"
        if condition not in ("not-running", "next-exit", "removed"):
            raise InvalidParameter(f"invalid condition: \"{condition}\"")
        if condition == "removed":
            # Somebody waits for the removal (docker run --rm): an auto-removal need not wait
            # for a client to read the exit (see exits.py).
            with self._locks_lock:
                self._removal_waits[rec["id"]] = self._removal_waits.get(rec["id"], 0) + 1
        return lambda: self._wait(rec, condition, timeout)

    def _wait(self, rec: dict, condition: str, timeout: float | None) -> dict:
        cid = rec["id"]
        try:
            result = self._wait_for(rec, condition, timeout)
        finally:
            if condition == "removed":
                with self._locks_lock:
                    left = self._removal_waits.pop(cid, 1) - 1
                    if left > 0:
                        self._removal_waits[cid] = left
        self._exit_observed(cid)
        return result

    def _wait_for(self, rec: dict, condition: str, timeout: float | None) -> dict:
        cid = rec["id"]
        deadline = None if timeout is None else time.monotonic() + timeout
        started = rec["state"].get("StartedAt")
        with self._changed:
            while True:
                cur = self.store.get(cid)
                if cur is None:
                    # removed: its last state (an auto-remove follows the exit at once)
                    st = self._final_states.get(cid) or rec["state"]
                    return {"StatusCode": int(st.get("ExitCode") or 0), "Error": None}
                st = cur["state"]
                status = status_of(st)
                exited_since = status in _AFTER_EXIT and st.get("FinishedAt", ZERO_TIME) != ZERO_TIME and \
                    parse_rfc3339(st["FinishedAt"]) >= parse_rfc3339(started)
                # (an exit that a restart follows ends a not-running wait too, as dockerd's)
                if condition == "not-running" and (status in STOPPED or exited_since):
                    break
                if condition == "next-exit" and exited_since:
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise EngineError("timed out waiting for the container")
                self._changed.wait(0.2 if left is None else min(0.2, left))
        err = {"Message": st["Error"]} if st.get("Error") else None
        return {"StatusCode": int(st.get("ExitCode") or 0), "Error": err}
