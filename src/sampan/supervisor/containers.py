"""Containers in the supervisor: create (forked through the container's runtime with our
pipes or pty as its stdio), start, kill, delete, pause/resume, update, pids, stats.

The built-in runtime forks the init from this warm process (no new interpreter); an
external one runs its binary's `create`, whose init we reap as its subreaper. Either way
the init's stdio is ours and everything after (logs, attach, exec, exits) is the same.
"""
from __future__ import annotations

import os
import signal
import time

from .. import errors
from ..logs.jsonfile import JsonLog, count_option, size_option
from ..runtime import console as console_mod
from ..runtime import state as rstate
from ..runtime.api import Runtime
from ..runtime.container import CreateOptions
from ..runtime.errors import BadState, ContainerNotFound
from ..timefmt import rfc3339_ns
from .exits import Exits
from .loop import field, runtime_of
from .procs import STDERR, STDOUT, Conn, OpError, Proc, exit_code
from .streams import console_size, set_size


class Containers(Exits):
    # -- stdio ----------------------------------------------------------------------------
    def _pipes(self, proc: Proc, tty: bool, keep_stdin: bool) -> tuple[tuple[int, int, int], list[int]]:
        """The child's stdio and the fds to close in the supervisor once it is forked."""
        if tty:
            return (self._devnull, self._devnull, self._devnull), []
        theirs: list[int] = []
        if keep_stdin:
            r, w = os.pipe()
            proc.stdin_fd = w
            theirs.append(r)
            stdin = r
        else:
            stdin = self._devnull
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        proc.outs = {out_r: STDOUT, err_r: STDERR}
        theirs += [out_w, err_w]
        return (stdin, out_w, err_w), theirs

    def _discard_fds(self, proc: Proc) -> None:
        for fd in list(proc.outs) + ([proc.stdin_fd] if proc.stdin_fd >= 0 and proc.stdin_fd not in proc.outs else []):
            try:
                os.close(fd)
            except OSError:
                pass
        proc.outs = {}
        proc.stdin_fd = -1

    def _adopt(self, proc: Proc, master: int | None) -> None:
        if master is not None:
            os.set_blocking(master, False)
            proc.outs = {master: STDOUT}
            proc.stdin_fd = master
        for fd in proc.outs:
            os.set_blocking(fd, False)
            self.by_fd[fd] = proc
        if proc.stdin_fd >= 0:
            os.set_blocking(proc.stdin_fd, False)
            self.by_fd[proc.stdin_fd] = proc
        if proc.pid:
            self.by_pid[proc.pid] = proc
        self._update_out(proc)

    # -- ops ------------------------------------------------------------------------------
    def op_create(self, conn: Conn, rid: object, req: dict) -> dict:
        runtime = runtime_of(self, req)
        cid, bundle = field(req, "container"), field(req, "bundle")
        try:
            rstate.check_id(cid)
        except BadState as e:
            raise OpError(errors.INVALID, str(e)) from None
        if cid in self.containers:
            raise OpError(errors.CONFLICT, f"container {cid} exists")
        tty = bool(req.get("tty"))
        log_cfg = req.get("log")
        log = None
        if log_cfg is not None:
            if not isinstance(log_cfg, dict) or not log_cfg.get("path"):
                raise OpError(errors.INVALID, "log needs a path")
            log = JsonLog(str(log_cfg["path"]), size_option(log_cfg.get("max_size")),
                          count_option(log_cfg.get("max_file")))
        size = console_size(req)
        proc = Proc("container", cid, cid, tty, runtime)
        proc.bundle = os.path.abspath(bundle)
        proc.exit_file = os.path.join(os.path.dirname(proc.bundle), "exit.json")
        proc.log = log
        stdio, theirs = self._pipes(proc, tty, bool(req.get("stdin")))
        opts = CreateOptions(stdio=stdio, own_terminal=tty)
        master = None
        try:
            try:
                proc.pid = runtime.create(cid, proc.bundle, opts)
            finally:
                for fd in theirs:
                    os.close(fd)
            if tty:
                if opts.terminal_receiver is None:
                    self._kill_failed_create(proc)
                    raise OpError(errors.INVALID, "tty requested but the bundle's process.terminal is false")
                master = console_mod.recv_master(opts.terminal_receiver)
                if size:
                    set_size(master, size)
        except BaseException:
            self._discard_fds(proc)
            if log is not None:
                log.close()
            raise
        finally:
            if opts.terminal_receiver is not None:
                opts.terminal_receiver.close()
        # A partial write from a previous run must not pass for this one's exit.
        try:
            os.unlink(proc.exit_file)
        except OSError:
            pass
        self.containers[cid] = proc
        self._adopt(proc, master)
        return {"pid": proc.pid}

    def _kill_failed_create(self, proc: Proc) -> None:
        try:
            proc.runtime.delete(proc.key, force=True)
        except Exception:  # noqa: BLE001
            pass

    def _running(self, req: dict) -> Proc:
        proc = self._container(req)
        if proc.status == "exited" or proc.reaped_at:
            raise OpError(errors.CONFLICT, f"container {proc.key} is not running")
        return proc

    def op_start(self, conn: Conn, rid: object, req: dict) -> dict:
        proc = self._container(req)
        if proc.status != "created" or proc.reaped_at:
            raise OpError(errors.CONFLICT, f"container {proc.key} is "
                                           f"{proc.status if not proc.reaped_at else 'exited'}; it cannot be started")
        proc.runtime.start(proc.key)
        proc.status = "running"
        proc.started_at = rfc3339_ns()
        return {"started_at": proc.started_at}

    def op_kill(self, conn: Conn, rid: object, req: dict) -> dict:
        proc = self._running(req)
        sig = int(req.get("signal") or signal.SIGTERM)
        proc.runtime.kill(proc.key, sig, bool(req.get("all")))
        return {}

    def op_pause(self, conn: Conn, rid: object, req: dict) -> dict:
        proc = self._running(req)
        proc.runtime.pause(proc.key)
        proc.frozen = True
        return {}

    def op_resume(self, conn: Conn, rid: object, req: dict) -> dict:
        proc = self._running(req)
        proc.runtime.resume(proc.key)
        proc.frozen = False
        return {}

    def op_update(self, conn: Conn, rid: object, req: dict) -> dict:
        """`resources`: OCI linux.resources to apply to the live container."""
        proc = self._running(req)
        resources = req.get("resources")
        if not isinstance(resources, dict):
            raise OpError(errors.INVALID, "resources (OCI linux.resources) is required")
        proc.runtime.update(proc.key, resources)
        return {}

    def op_pids(self, conn: Conn, rid: object, req: dict) -> dict:
        proc = self._container(req)
        if proc.status == "exited" or proc.reaped_at:
            return {"pids": []}
        return {"pids": proc.runtime.pids(proc.key)}

    def op_stats(self, conn: Conn, rid: object, req: dict) -> dict:
        proc = self._running(req)
        return {"stats": proc.runtime.stats(proc.key)}

    def op_delete(self, conn: Conn, rid: object, req: dict) -> dict:
        """Deletes the container, killing it first if it still runs. One this supervisor does
        not hold (a leftover of an earlier supervisor) is deleted from its runtime's state."""
        cid = field(req, "container")
        proc = self.containers.get(cid)
        if proc is None:
            return self._delete_leftover(cid, runtime_of(self, req))
        if not proc.reaped_at:
            self.by_pid.pop(proc.pid, None)
            self._exited(proc, self._kill_and_wait(proc))
        if proc.status != "exited":
            self._finish(proc)  # the init is gone; its pipes hold at most what is buffered
        try:
            proc.runtime.delete(proc.key, force=True)
        except ContainerNotFound:
            pass
        del self.containers[proc.key]
        for exec_id in proc.execs:
            ex = self.execs.pop(exec_id, None)
            if ex is not None and ex.status != "exited":
                self.by_pid.pop(ex.pid, None)
                if ex.exit_code is None:
                    ex.exit_code, ex.finished_at = 137, rfc3339_ns()  # killed with its container
                self._finish(ex)
        return {}

    def _delete_leftover(self, cid: str, runtime: Runtime) -> dict:
        try:
            rstate.check_id(cid)
            runtime.state(cid)
        except (ContainerNotFound, BadState):
            raise OpError(errors.NOT_FOUND, f"no such container: {cid}") from None
        runtime.delete(cid, force=True)
        return {"leftover": True}

    def _kill_and_wait(self, proc: Proc) -> int:
        """SIGKILL a container's init and reap it (thawing a paused container on the way)."""
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 10
        thawed = False
        while True:
            try:
                got, status = os.waitpid(proc.pid, os.WNOHANG)
            except ChildProcessError:
                return 137
            if got:
                return exit_code(status)
            if time.monotonic() > deadline:
                return 137
            if not thawed and (proc.frozen or time.monotonic() > deadline - 9.5):
                thawed = True
                try:
                    proc.runtime.resume(proc.key)
                except Exception:  # noqa: BLE001 - not paused
                    pass
            time.sleep(0.002)
