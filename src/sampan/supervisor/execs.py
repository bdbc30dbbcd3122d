"""exec in the supervisor: a process started in a running container through the container's
runtime, its stdio held here like an init's (attached on the request's own connection,
held until the first attach, or discarded when detached).

A process that cannot be started (a missing or non-executable binary, a bad cwd) is not an
error of the request, as with dockerd: the exec is recorded as exited with 127 (not found)
or 126 (any other failure), its message is its output, and its exit is reported like any.
"""
from __future__ import annotations

import os

from .. import errors
from ..runtime import console as console_mod
from ..runtime.container import ExecOptions
from ..runtime.errors import BadState, ContainerExists, ContainerNotFound, RuntimeError_
from ..timefmt import rfc3339_ns
from .containers import Containers
from .loop import field
from .procs import STDOUT, Conn, OpError, Proc
from .streams import console_size

NOT_FOUND_EXIT, CANNOT_RUN_EXIT = 127, 126


def start_failure_code(message: str) -> int:
    """dockerd's exit code for an exec whose process could not be started."""
    low = message.lower()
    return NOT_FOUND_EXIT if "not found" in low or "no such file" in low else CANNOT_RUN_EXIT


class Execs(Containers):
    def op_exec(self, conn: Conn, rid: object, req: dict) -> dict | None:
        container = self._container(req)
        exec_id = field(req, "exec_id")
        if exec_id in self.execs:
            raise OpError(errors.CONFLICT, f"exec {exec_id} exists")
        if container.status != "running" or container.reaped_at:
            raise OpError(errors.CONFLICT, f"container {container.key} is not running")
        process = req.get("process")
        if not isinstance(process, dict) or not process.get("args"):
            raise OpError(errors.INVALID, "process with args is required")
        tty = bool(req.get("tty"))
        process = dict(process, terminal=tty)
        size = console_size(req)
        if tty and size:
            process["consoleSize"] = {"height": size[0], "width": size[1]}
        proc = Proc("exec", exec_id, container.key, tty, container.runtime)
        attach, stdin = bool(req.get("attach")), bool(req.get("stdin"))
        proc.hold = not attach and not req.get("detach")
        proc.held = [] if proc.hold else None
        stdio, theirs = self._pipes(proc, tty, stdin)
        opts = ExecOptions(stdio=stdio, own_terminal=tty, detach=True)
        master = None
        try:
            try:
                proc.pid = container.runtime.exec(container.key, process, opts)
            finally:
                for fd in theirs:
                    os.close(fd)
            if tty and opts.terminal_receiver is not None:
                master = console_mod.recv_master(opts.terminal_receiver)
        except (ContainerNotFound, ContainerExists, BadState):
            self._discard_fds(proc)
            raise
        except RuntimeError_ as e:
            self._discard_fds(proc)
            return self._not_started(conn, rid, container, proc, str(e), attach, stdin)
        except BaseException:
            self._discard_fds(proc)
            raise
        finally:
            if opts.terminal_receiver is not None:
                opts.terminal_receiver.close()
        proc.status = "running"
        proc.started_at = rfc3339_ns()
        self.execs[exec_id] = proc
        container.execs.append(exec_id)
        self._adopt(proc, master)
        if attach:
            self._reply(conn, rid, {"pid": proc.pid})
            self._start_attach(conn, proc, stdin, True, True)
            return None
        return {"pid": proc.pid}

    def _not_started(self, conn: Conn, rid: object, container: Proc, proc: Proc, message: str, attach: bool,
                     stdin: bool) -> dict | None:
        """Records the exec as exited (its exit reported first), its message as its output."""
        message = " ".join(message.split())
        proc.error = message
        proc.started_at = rfc3339_ns()
        if proc.held is None and attach:
            proc.hold, proc.held = True, []
        if proc.held is not None:
            # as dockerd writes it on the exec's stream
            proc.held.append((STDOUT, f"OCI runtime exec failed: {message}: unknown\r\n".encode()))
        self.execs[proc.key] = proc
        container.execs.append(proc.key)
        self._exited(proc, start_failure_code(message))
        reply = {"pid": 0, "exit_code": proc.exit_code, "error": message}
        if not attach:
            return reply
        self._reply(conn, rid, reply)
        self._start_attach(conn, proc, stdin, True, True)
        return None

