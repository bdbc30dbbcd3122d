"""Exits: reaping (the supervisor is every container's subreaper), recording an exit, and
reporting it, in this order, before any of the process's attach streams is closed:
state (`wait`, `list`, `exec_state` answer it), exit.json (containers), waiters, then one
event to every subscriber. A client that sees its stream end therefore never asks too early.

Events carry a sequence number; the last EVENT_RING are kept so that a subscriber that was
dropped or reconnects (`subscribe` with `after`) receives what it missed, or learns that it
missed too much (`gap`) or that this is another supervisor (`epoch`) and reconciles.
"""
from __future__ import annotations

import os
import time

from .. import errors, fastjson
from ..runtime.fsutil import atomic_write
from ..timefmt import rfc3339_ns
from .procs import SUBSCRIBER_MAX, Conn, OpError, Proc, exit_code
from .streams import Streams


class Exits(Streams):
    def _on_wakeup(self, fd: int, _mask: int) -> None:
        try:
            while os.read(fd, 512):
                pass
        except BlockingIOError:
            pass
        self._reap()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            proc = self.by_pid.pop(pid, None)
            if proc is not None:
                self._exited(proc, exit_code(status))
            # anything else: an orphan reparented to us (we are the subreaper), or an
            # external runtime's own process; reaped, done.

    def _exited(self, proc: Proc, code: int) -> None:
        if proc.reaped_at:
            return
        proc.exit_code = code
        proc.finished_at = rfc3339_ns()
        proc.reaped_at = time.monotonic()
        if proc.kind == "container":
            proc.oom_killed = proc.runtime.oom_killed(proc.key)
        if not proc.outs:
            self._finish(proc)
        else:
            # Output still in the pipes: read to EOF (bounded by DRAIN_GRACE) before reporting.
            self.draining.append(proc)
            self._update_out(proc)

    def _finish(self, proc: Proc) -> None:
        """The process exited and its output is drained: record and report it, then end its
        attach streams."""
        if proc in self.draining:
            self.draining.remove(proc)
        for fd in list(proc.outs):
            self._close_out(proc, fd, final=True)
        self._close_stdin(proc)
        if proc.status == "exited":
            return
        proc.status = "exited"
        if proc.log is not None:
            proc.log.close()
            proc.log = None
        fields = proc.exit_fields()
        if proc.kind == "container" and proc.exit_file:
            try:
                # (not fsynced: it tells a restarted sampand of an exit; after a host crash
                # there is nothing running to reconcile)
                atomic_write(proc.exit_file, fastjson.dumps(fields).encode() + b"\n", 0o644, durable=False)
            except OSError as e:
                self._log_error(f"write {proc.exit_file}: {e}")
        for conn, rid in proc.waiters:
            if not conn.closed:
                self._reply(conn, rid, fields)
        proc.waiters.clear()
        self._publish(proc)
        self._end_attachers(proc)

    def _publish(self, proc: Proc) -> None:
        self.seq += 1
        key = "container" if proc.kind == "container" else "exec_id"
        event = {"event": "exit", "seq": self.seq, key: proc.key, "exit_code": proc.exit_code,
                 "oom_killed": proc.oom_killed, "finished_at": proc.finished_at, "time": proc.finished_at}
        if proc.kind == "exec":
            event["container"] = proc.container
        self.events.append(event)
        line = fastjson.dumps(event).encode() + b"\n"
        for conn in list(self.subscribers):
            self._send(conn, line)
            if len(conn.wbuf) > SUBSCRIBER_MAX:
                self._close(conn)  # it resubscribes with `after` and gets the rest from the ring

    # -- ops ------------------------------------------------------------------------------
    def op_wait(self, conn: Conn, rid: object, req: dict) -> dict | None:
        proc = self._target(req)
        if proc.status == "exited":
            return proc.exit_fields()
        proc.waiters.append((conn, rid))
        return None

    def op_list(self, conn: Conn, rid: object, req: dict) -> dict:
        return {"containers": [p.state_fields() for p in self.containers.values()], "seq": self.seq,
                "epoch": self.epoch}

    def op_exec_state(self, conn: Conn, rid: object, req: dict) -> dict:
        """An exec's state at once (`wait` blocks): status created/running/exited, exit_code."""
        exec_id = req.get("exec_id")
        proc = self.execs.get(exec_id) if isinstance(exec_id, str) else None
        if proc is None:
            raise OpError(errors.NOT_FOUND, f"no such exec: {exec_id}")
        return proc.state_fields()

    def op_subscribe(self, conn: Conn, rid: object, req: dict) -> None:
        after = req.get("after")
        replay: list[dict] = []
        gap = False
        if after is not None:
            after = int(after)
            if req.get("epoch") not in (None, self.epoch):
                gap = True  # another supervisor's numbers: everything may have been missed
            else:
                replay = [e for e in self.events if e["seq"] > after]
                oldest = self.events[0]["seq"] if self.events else self.seq + 1
                gap = after < self.seq and oldest > after + 1
        self._reply(conn, rid, {"seq": self.seq, "epoch": self.epoch, "gap": gap})
        conn.mode = "subscribe"
        self.subscribers.append(conn)
        for event in replay:
            self._send(conn, fastjson.dumps(event).encode() + b"\n")
        return None
