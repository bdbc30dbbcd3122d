"""Exits as events: one subscription to the supervisor delivers the exits of every container
and exec; no thread waits per process.

The subscription is made with the first supervisor client (before anything is created or
started through it, so no exit can be missed), handed to one reader thread, and made again
when the supervisor goes away; after each (re)subscription the engine catches up with what
it may have missed: the supervisor's `list` and the containers' exit.json files.
Exits are handled on a small pool (an exit may unmount, remove a container, schedule a
restart), in order for each container since a container has one process at a time.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from ...timefmt import parse_rfc3339, rfc3339
from .. import restart as _restart
from ..errors import EngineError
from .base import EngineBase
from .state import LIVE, Status, status_of

if TYPE_CHECKING:
    from ...supervisor.client import Subscription

EXIT_WORKERS = 4  # threads that handle exits (unmounts, auto-removals) side by side
AUTO_REMOVE_GRACE = 2.0  # seconds an exited AutoRemove container waits for a client's wait
RESUBSCRIBE_DELAY = 0.1  # between attempts to reach a supervisor that went away
# The exit of a process the supervisor no longer knows (it restarted without its exit.json).
_UNKNOWN_EXIT = 255
# An exec that was running when its supervisor went away: it was killed with its container.
_LOST_EXEC_EXIT = 137


class ExitsMixin(EngineBase):
    _exit_pool: ThreadPoolExecutor | None
    _subscription: Subscription | None  # the reader's, closed with the engine

    def _subscribe(self) -> None:
        """Subscribes to exits now (the supervisor running) and starts the reader thread of
        that subscription; the caller catches up with what happened before."""
        from ...supervisor.client import Client
        events = Client(self.exec_root).subscribe()
        threading.Thread(target=self._read_exits, args=(events,), name="exits", daemon=True).start()

    def _read_exits(self, events: Subscription) -> None:
        from ...supervisor.client import Client, SupervisorError, ensure_running
        while True:
            self._subscription = events
            for event in events:
                if self._closed:
                    return
                if event.get("event") == "exit":
                    self._dispatch(event)
            # The supervisor went away, or dropped us for reading too slowly: subscribe again
            # from the last event seen (the supervisor replays what it still has).
            while not self._closed:
                try:
                    if self._start_supervisor:
                        ensure_running(self.root, self.exec_root)
                    events = Client(self.exec_root).subscribe(after=events.last_seq, epoch=events.epoch)
                    break
                except (SupervisorError, OSError):
                    time.sleep(RESUBSCRIBE_DELAY)
            if self._closed:
                return
            if events.gap:  # (the supervisor keeps the new events meanwhile)
                self._guarded(self._catch_up)

    def _exit_pool_submit(self, fn, *args) -> None:  # type: ignore[no-untyped-def]
        with self._locks_lock:
            if self._closed:
                return
            if self._exit_pool is None:
                self._exit_pool = ThreadPoolExecutor(EXIT_WORKERS, thread_name_prefix="exit")
            pool = self._exit_pool
        pool.submit(self._guarded, fn, *args)

    def _guarded(self, fn, *args) -> None:  # type: ignore[no-untyped-def]
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - a pool has nobody to raise to
            if not self._closed:  # (a closing engine's store is gone; the next reconcile catches up)
                logging.getLogger("sampan.engine").exception("handling an exit")

    def _dispatch(self, event: dict) -> None:
        exit_fields = {"exit_code": event.get("exit_code"), "oom_killed": bool(event.get("oom_killed")),
                       "finished_at": event.get("finished_at") or rfc3339()}
        if event.get("exec_id"):
            # Recorded here, in order, at once: a client reads it as soon as the stream ends.
            self._on_exec_exit(str(event["exec_id"]), exit_fields)
        elif event.get("container"):
            self._exit_pool_submit(self._on_exit, str(event["container"]), exit_fields)

    def _catch_up(self) -> None:
        """After a (re)subscription: the exits the engine may have missed, from the supervisor's
        list and exit.json (a supervisor that restarted knows nothing of what ran before)."""
        from ...supervisor.client import SupervisorError
        recs = [r for r in self.store.all() if status_of(r["state"]) in LIVE or
                (status_of(r["state"]) is Status.RESTARTING and not self.restarter.pending(r["id"]))]
        running_execs = self.store.running_execs()
        if not recs and not running_execs:
            return
        try:
            live = {c["container"]: c for c in self._call("list")["containers"]}
        except (SupervisorError, OSError):
            return  # the reader subscribes again (and learns of the gap then)
        for rec in recs:
            cid = rec["id"]
            known = live.get(cid)
            if known is not None and known["status"] != "exited" and status_of(rec["state"]) in LIVE:
                continue
            if known is not None and known["status"] == "exited":
                fields = {"exit_code": known.get("exit_code"), "oom_killed": bool(known.get("oom_killed")),
                          "finished_at": known.get("finished_at") or rfc3339()}
            else:
                fields = self._exit_record(cid) or {"exit_code": _UNKNOWN_EXIT, "oom_killed": False,
                                                     "finished_at": rfc3339()}
            self._on_exit(cid, fields, after_restart=status_of(rec["state"]) is Status.RESTARTING,
                          run=rec["state"].get("StartedAt"))
        for exec_id in running_execs:
            try:
                known = self._call("exec_state", exec_id=exec_id)
            except SupervisorError as e:
                if e.code != "not_found":
                    continue  # asked again at the next catch-up
                known = {"status": "exited", "exit_code": _LOST_EXEC_EXIT}  # gone with its supervisor
            if known.get("status") == "exited":
                self._on_exec_exit(exec_id, known)

    def _on_exec_exit(self, exec_id: str, fields: dict) -> None:
        ex = self.store.exec(exec_id)
        if ex is None or ex["state"].get("ExitCode") is not None:
            return
        code = int(fields.get("exit_code") if fields.get("exit_code") is not None else _LOST_EXEC_EXIT)
        self.store.update_exec(exec_id, only_if=lambda s: s.get("ExitCode") is None,
                               Running=False, ExitCode=code, Pid=0)
        self._notify()
        rec = self.store.get(ex["container_id"])
        if rec is not None:
            self._emit(rec, "exec_die", execID=exec_id, exitCode=str(code))

    def _exit_observed(self, cid: str) -> None:
        """A wait has answered with the container's exit: a pending auto-removal goes now."""
        if cid in self._auto_remove_due:
            self._exit_pool_submit(self._auto_remove, cid)

    def _auto_remove(self, cid: str, claimed: bool = False) -> None:
        with self._locks_lock:
            due = cid in self._auto_remove_due
            self._auto_remove_due.discard(cid)
        if not due and not claimed:
            return
        try:
            self.remove(cid, force=True, volumes=True, _files_after=True)
        except EngineError:
            pass

    def _on_exit(self, cid: str, fields: dict, after_restart: bool = False, run: str | None = None) -> None:
        """Records a container's exit, then removes it (AutoRemove) or applies its restart
        policy. after_restart: the exit of a container left restarting by an engine that
        stopped before its restart; run: the StartedAt of the run that ended, when known
        (a catch-up races with the start of the next run)."""
        from ...supervisor.client import SupervisorError
        expected = LIVE | {Status.RESTARTING} if after_restart else LIVE
        with self._lock(cid):
            rec = self.store.get(cid)
            finished = fields.get("finished_at") or rfc3339()
            if rec is None or status_of(rec["state"]) not in expected or \
                    (run is not None and rec["state"].get("StartedAt") != run) or \
                    parse_rfc3339(finished) < parse_rfc3339(rec["state"].get("StartedAt")):
                return  # an exit handled already (the event and a catch-up), or of an earlier run
            code = int(fields.get("exit_code") or 0)
            oom = bool(fields.get("oom_killed"))
            auto_remove = bool(rec["host_config"].get("AutoRemove")) and not self._closed
            if not auto_remove:  # (the removal below deletes it in the supervisor and unmounts)
                try:
                    self._call("delete", container=cid)
                except (SupervisorError, OSError):
                    pass
                self._unmount(cid)
                self._network_down(rec)
            st = self._set_status(cid, Status.EXITED, Pid=0, ExitCode=code, OOMKilled=oom,
                                  FinishedAt=finished, Paused=False)
            rec["state"] = st
            # Decided under the lock a stop takes to set ManuallyStopped: a stop either comes
            # first (no restart) or finds the restart scheduled (and cancels it).
            policy = rec["host_config"].get("RestartPolicy") or {}
            if not auto_remove and cid not in self._removing and not self._closed and \
                    _restart.should_restart(policy, st, code):
                self._set_status(cid, Status.RESTARTING)
                self.restarter.schedule(cid, max(0.0, parse_rfc3339(finished) - parse_rfc3339(st.get("StartedAt"))))
            self._notify()
        if oom:
            self._emit(rec, "oom")
        self._emit(rec, "die", exitCode=str(code))
        if auto_remove:
            with self._locks_lock:
                waited_for = bool(self._removal_waits.get(cid))
                if not waited_for:
                    self._auto_remove_due.add(cid)
            if waited_for:
                self._auto_remove(cid, claimed=True)
            else:
                # Nobody waits for the removal (docker-py's run(auto_remove=True) starts, then
                # reads the logs and waits): the container stays until a wait has seen its exit,
                # or for AUTO_REMOVE_GRACE at most; dockerd's slower removal gives clients that
                # same window.
                timer = threading.Timer(AUTO_REMOVE_GRACE, self._exit_pool_submit, (self._auto_remove, cid))
                timer.daemon = True
                timer.start()
            return
