"""The supervisor's event loop: one thread, one selector, the socket, connections and the
dispatch of requests to the `op_<name>` methods of the parts (containers.py, execs.py,
exits.py, streams.py), which server.Supervisor puts together. The loop calls into them for
the children (_on_wakeup, _reap, _finish: exits.py) and for attach streams (_attach_data,
_attach_eof, _drained, _detach: streams.py).

Protocol: docs/ENGINE.md "Supervisor protocol" (JSON lines on <exec_root>/supervisor.sock).
"""
from __future__ import annotations

import os
import selectors
import signal
import socket
import time
from collections import deque
from typing import Any, Callable

from .. import errors, fastjson, paths
from ..runtime.errors import BadState, ContainerExists, ContainerNotFound, RuntimeError_
from ..runtime.fsutil import atomic_write
from ..runtime.registry import BuiltinRuntime, Registry
from ..timefmt import rfc3339_ns
from .procs import CHUNK, DRAIN_GRACE, EVENT_RING, MAX_LINE, Conn, OpError, Proc, reset_child_signals

VERSION = "2"
EV_READ, EV_WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
Handler = Callable[[int, int], None]


class Loop:
    def __init__(self, root: str, exec_root: str, runtime_root: str | None = None) -> None:
        self.root = os.path.abspath(root)
        self.exec_root = os.path.abspath(exec_root)
        self.runtime_root = runtime_root or os.path.join(self.exec_root, "runtime")
        self.runtime = BuiltinRuntime(root=self.runtime_root, warn=lambda message: None, precompile_seccomp=True)
        self.runtimes = Registry(self.exec_root, builtin=self.runtime)
        self.sel = selectors.DefaultSelector()
        self.handlers: dict[int, tuple[Handler, int]] = {}  # fd -> (callback(fd, mask), events)
        self.containers: dict[str, Proc] = {}
        self.execs: dict[str, Proc] = {}
        self.by_pid: dict[int, Proc] = {}
        self.by_fd: dict[int, Proc] = {}
        self.subscribers: list[Conn] = []
        self.events: deque[dict] = deque(maxlen=EVENT_RING)
        self.seq = 0               # of the last exit event
        self.epoch = time.time_ns()  # tells a resubscribing client that this is another supervisor
        self.draining: list[Proc] = []
        self.stopping = False
        self.listener: socket.socket | None = None
        self.sock_path = paths.supervisor_socket(self.exec_root)
        self.pid_path = os.path.join(self.exec_root, "supervisor.pid")
        self._wake_r = self._wake_w = -1
        self._devnull = -1

    # -- fd bookkeeping ---------------------------------------------------------------
    def _set(self, fd: int, callback: Handler | None, events: int) -> None:
        old = self.handlers.get(fd)
        if events == 0 or callback is None:
            if old is not None:
                self.sel.unregister(fd)
                del self.handlers[fd]
            return
        if old is None:
            self.sel.register(fd, events, callback)
        elif old[1] != events or old[0] is not callback:
            self.sel.modify(fd, events, callback)
        self.handlers[fd] = (callback, events)

    def _events(self, fd: int) -> int:
        entry = self.handlers.get(fd)
        return entry[1] if entry else 0

    def _forget(self, fd: int) -> None:
        if fd in self.handlers:
            self.sel.unregister(fd)
            del self.handlers[fd]

    # -- setup ------------------------------------------------------------------------
    def listen(self) -> None:
        os.makedirs(self.exec_root, mode=0o711, exist_ok=True)
        os.makedirs(self.runtime_root, mode=0o711, exist_ok=True)
        try:
            os.unlink(self.sock_path)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        cwd = os.open(".", os.O_RDONLY | os.O_CLOEXEC)
        try:  # relative bind: socket paths are limited to 108 bytes
            os.chdir(self.exec_root)
            sock.bind(os.path.basename(self.sock_path))
        finally:
            os.fchdir(cwd)
            os.close(cwd)
        os.chmod(self.sock_path, 0o600)
        sock.listen(128)
        sock.setblocking(False)
        self.listener = sock
        self._set(sock.fileno(), self._on_accept, EV_READ)
        atomic_write(self.pid_path, str(os.getpid()).encode(), 0o644)

    def _install_signals(self) -> None:
        from ..runtime.foreground import become_subreaper
        become_subreaper()  # the inits an external runtime forks become our children when it exits
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        os.register_at_fork(after_in_child=reset_child_signals)
        self._set(self._wake_r, self._on_wakeup, EV_READ)
        self._devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)

    def _on_stop_signal(self, *_: object) -> None:
        self.stopping = True

    def serve(self) -> None:
        self._install_signals()
        self.listen()
        self._reap()
        while not self.stopping:
            timeout = None
            if self.draining:
                timeout = max(0.0, min(p.reaped_at for p in self.draining) + DRAIN_GRACE - time.monotonic())
            for key, mask in self.sel.select(timeout):
                entry = self.handlers.get(key.fd)
                if entry is None:
                    continue  # closed by an earlier callback of this round
                try:
                    entry[0](key.fd, mask)
                except Exception as e:  # noqa: BLE001 - a bug in one handler must not end the loop
                    self._log_error(f"handler for fd {key.fd}: {type(e).__name__}: {e}")
            if self.draining:
                now = time.monotonic()
                for proc in [p for p in self.draining if now - p.reaped_at >= DRAIN_GRACE]:
                    self._finish(proc)
        self.shutdown()

    def shutdown(self) -> None:
        """Leave the containers running: close the socket and our ends of their stdio."""
        if self.listener is not None:
            self._forget(self.listener.fileno())
            self.listener.close()
            self.listener = None
        for path in (self.sock_path, self.pid_path):
            try:
                os.unlink(path)
            except OSError:
                pass
        for proc in self._all_procs():
            if proc.log is not None:
                proc.log.close()

    def _log_error(self, message: str) -> None:
        try:
            with open(os.path.join(self.exec_root, "supervisor.log"), "a") as f:
                f.write(f"{rfc3339_ns()} {message}\n")
        except OSError:
            pass

    def _all_procs(self) -> list[Proc]:
        return list(self.containers.values()) + list(self.execs.values())

    # -- connections ---------------------------------------------------------------------
    def _on_accept(self, fd: int, _mask: int) -> None:
        assert self.listener is not None
        for _ in range(64):
            try:
                sock, _addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self._log_error(f"accept: {e}")
                return
            sock.setblocking(False)
            conn = Conn(sock)
            self._set(conn.fd, lambda fd, mask, conn=conn: self._on_conn(conn, mask), EV_READ)

    def _conn_events(self, conn: Conn, read: bool | None = None) -> None:
        if conn.closed:
            return
        entry = self.handlers.get(conn.fd)
        current = entry[1] if entry else 0
        cb = entry[0] if entry else (lambda fd, mask, conn=conn: self._on_conn(conn, mask))
        events = current
        if read is not None:
            events = (events | EV_READ) if read else (events & ~EV_READ)
        events = (events | EV_WRITE) if conn.wbuf else (events & ~EV_WRITE)
        if events != current or entry is None:
            if events == 0 and entry is None:
                return
            self._set(conn.fd, cb, events)

    def _on_conn(self, conn: Conn, mask: int) -> None:
        if mask & EV_WRITE:
            self._flush(conn)
            if conn.closed:
                return
        if not mask & EV_READ:
            return
        try:
            data = conn.sock.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:
            self._on_conn_eof(conn)
            return
        if conn.mode == "attach":
            self._attach_data(conn, data)
            return
        if conn.mode != "rpc":
            return  # subscribers have nothing to say
        conn.rbuf += data
        while not conn.closed and conn.mode == "rpc":
            nl = conn.rbuf.find(b"\n")
            if nl < 0:
                if len(conn.rbuf) > MAX_LINE:
                    self._reply_error(conn, None, errors.INVALID, "request line too long")
                    conn.closing = True
                    self._flush(conn)
                return
            line = bytes(conn.rbuf[:nl])
            del conn.rbuf[:nl + 1]
            if line.strip():
                self._request(conn, line)
        # Bytes after an attach request are the first stdin bytes.
        if conn.mode == "attach" and conn.rbuf:
            rest, conn.rbuf = bytes(conn.rbuf), bytearray()
            self._attach_data(conn, rest)

    def _on_conn_eof(self, conn: Conn) -> None:
        conn.read_eof = True
        if conn.mode == "attach":
            self._attach_eof(conn)
            self._conn_events(conn, read=False)
            return
        if conn.mode == "subscribe" or not conn.wbuf:
            self._close(conn)  # pending replies (wait) have nobody to go to
            return
        conn.closing = True
        self._conn_events(conn, read=False)

    def _send(self, conn: Conn, data: bytes) -> None:
        if conn.closed:
            return
        conn.wbuf += data
        self._flush(conn)

    def _flush(self, conn: Conn) -> None:
        if conn.closed:
            return
        while conn.wbuf:
            try:
                n = conn.sock.send(conn.wbuf[:1 << 20])
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._close(conn)
                return
            del conn.wbuf[:n]
        if not conn.wbuf and conn.closing:
            self._close(conn)
            return
        self._conn_events(conn)
        if conn.proc is not None:
            self._drained(conn)

    def _close(self, conn: Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._forget(conn.fd)
        try:
            conn.sock.close()
        except OSError:
            pass
        conn.wbuf = bytearray()
        if conn in self.subscribers:
            self.subscribers.remove(conn)
        if conn.proc is not None:
            self._detach(conn)
        for p in self._all_procs():
            if p.waiters:
                p.waiters[:] = [(c, r) for c, r in p.waiters if c is not conn]

    def _reply(self, conn: Conn, rid: object, fields: dict) -> None:
        self._send(conn, fastjson.dumps({"id": rid, "ok": True, **fields}).encode() + b"\n")

    def _reply_error(self, conn: Conn, rid: object, code: str, message: str) -> None:
        message = " ".join(str(message).split()) or code
        self._send(conn, fastjson.dumps({"id": rid, "ok": False, "error": message, "code": code}).encode() + b"\n")

    # -- requests ----------------------------------------------------------------------------
    def _request(self, conn: Conn, line: bytes) -> None:
        rid = None
        try:
            try:
                req = fastjson.loads(line)
            except (ValueError, UnicodeDecodeError) as e:
                raise OpError(errors.INVALID, f"bad request: {e}") from None
            if not isinstance(req, dict):
                raise OpError(errors.INVALID, "a request is a JSON object")
            rid = req.get("id")
            op = req.get("op")
            handler = getattr(self, f"op_{op}", None) if isinstance(op, str) and op.isidentifier() else None
            if handler is None:
                raise OpError(errors.INVALID, f"unknown op: {op!r}")
            result = handler(conn, rid, req)
            if result is not None:
                self._reply(conn, rid, result)
        except OpError as e:
            self._reply_error(conn, rid, e.code, e.message)
        except ContainerNotFound as e:
            self._reply_error(conn, rid, errors.NOT_FOUND, str(e))
        except (ContainerExists, BadState) as e:
            self._reply_error(conn, rid, errors.CONFLICT, str(e))
        except RuntimeError_ as e:
            kind = errors.kind_of(e)
            self._reply_error(conn, rid, kind if kind != errors.INTERNAL else errors.INVALID, str(e))
        except (KeyError, TypeError, ValueError) as e:
            self._reply_error(conn, rid, errors.INVALID, f"bad request: {type(e).__name__}: {e}")
        except Exception as e:  # noqa: BLE001 - errors are replies, never crashes
            from ..runtime.errors import describe
            self._log_error(f"request {line[:200]!r}: {type(e).__name__}: {e}")
            self._reply_error(conn, rid, errors.INTERNAL, describe(e))

    def op_ping(self, conn: Conn, rid: object, req: dict) -> dict:
        return {"pid": os.getpid(), "version": VERSION}


def field(req: dict, name: str) -> str:
    """A required string field of a request."""
    value = req.get(name)
    if not isinstance(value, str) or not value:
        raise OpError(errors.INVALID, f"{name} is required")
    return value


def runtime_of(loop: Loop, req: dict) -> Any:
    """The runtime a request names ({"runtime": {"name", "path", "args"}}; absent: built in)."""
    spec = req.get("runtime")
    if not spec:
        return loop.runtime
    if not isinstance(spec, dict):
        raise OpError(errors.INVALID, "runtime is an object {name, path, args}")
    args = spec.get("args")
    if args is not None and not (isinstance(args, list) and all(isinstance(a, str) for a in args)):
        raise OpError(errors.INVALID, "runtime args are a list of strings")
    from ..runtime.registry import UnknownRuntime
    try:
        return loop.runtimes.get(spec.get("name"), spec.get("path") or None, args)
    except UnknownRuntime as e:
        raise OpError(errors.INVALID, str(e)) from None
