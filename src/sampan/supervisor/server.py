"""The supervisor's event loop: one thread, one selector, every container's stdio.

Protocol: docs/ENGINE.md "Supervisor protocol" (JSON lines on <exec_root>/supervisor.sock).

Memory per container is a Proc object, two or three fds and a log fd: output is read in
64 KiB chunks and written straight to the log; attachers get it through bounded buffers
(when one is full the container's output is paused until it drains, so nothing is lost and
nothing grows without bound). No thread, no asyncio.
"""
from __future__ import annotations

import errno
import fcntl
import os
import selectors
import signal
import socket
import struct
import termios
import time

from .. import fastjson
from ..runtime import console as console_mod
from ..runtime import state as rstate
from ..runtime.container import CreateOptions, ExecOptions, Runtime
from ..runtime.errors import BadState, ContainerExists, ContainerNotFound, RuntimeError_
from ..runtime.fsutil import atomic_write
from ..logs.jsonfile import JsonLog, count_option, size_option
from ..timefmt import rfc3339_ns as timestamp

VERSION = "1"
CHUNK = 65536
HIGH = 256 * 1024     # an attacher / stdin / held-output buffer above this pauses its source
LOW = 64 * 1024       # ... which resumes once the buffer is below this
MAX_LINE = 4 * 1024 * 1024  # longest request line
SUBSCRIBER_MAX = 1024 * 1024  # a subscriber that lets this much pile up is dropped
DRAIN_GRACE = 2.0     # seconds to wait for EOF on a process's output after it exited
WARM_FOR = 1.0        # seconds the cgroup migration lock is kept warm after a create (or "warm")
STDOUT, STDERR = 1, 2
_STREAM_NAMES = {STDOUT: "stdout", STDERR: "stderr"}

EV_READ, EV_WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


class OpError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _exit_code(status: int) -> int:
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return 255


def _reset_child_signals() -> None:
    """After a fork in the supervisor: the child (a container's init or exec on its way to
    execve) must not inherit our signal wiring; an ignored signal (Python ignores SIGPIPE and
    SIGXFSZ, our launcher may ignore others) or a blocked one would survive execve."""
    try:
        signal.set_wakeup_fd(-1)
    except (ValueError, OSError):
        pass
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass  # realtime signals the C library reserves
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


class Proc:
    """A container's init or an exec'd process, and its stdio."""

    __slots__ = ("kind", "key", "container", "pid", "tty", "stdin_fd", "stdin_buf", "stdin_eof", "outs", "log",
                 "attachers", "held", "held_size", "hold", "status", "exit_code", "oom_killed", "started_at",
                 "finished_at", "waiters", "reaped_at", "bundle", "paused", "execs", "exit_file")

    def __init__(self, kind: str, key: str, container: str, tty: bool) -> None:
        self.kind = kind                 # "container" or "exec"
        self.key = key
        self.container = container
        self.pid = 0
        self.tty = tty
        self.stdin_fd = -1               # pipe write end, or the pty master (also in outs)
        self.stdin_buf = bytearray()
        self.stdin_eof = False           # close stdin once stdin_buf is written
        self.outs: dict[int, int] = {}   # our read fd -> stream (the pty master is STDOUT)
        self.log: JsonLog | None = None
        self.attachers: list[Conn] = []
        self.held: list[tuple[int, bytes]] | None = None  # exec output until the first attacher
        self.held_size = 0
        self.hold = False
        self.status = "created"
        self.exit_code: int | None = None
        self.oom_killed = False
        self.started_at = ""
        self.finished_at = ""
        self.waiters: list[tuple[Conn, object]] = []
        self.reaped_at = 0.0             # monotonic time of the reap, 0 while it runs
        self.bundle = ""
        self.paused = False
        self.execs: list[str] = []
        self.exit_file = ""

    def exit_fields(self) -> dict:
        return {"exit_code": self.exit_code, "oom_killed": self.oom_killed, "finished_at": self.finished_at}


class Conn:
    """A client connection: requests (rpc), then maybe an attach or subscribe stream."""

    __slots__ = ("sock", "fd", "rbuf", "wbuf", "mode", "proc", "want_stdin", "want_out", "closing", "closed",
                 "read_eof")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.rbuf = bytearray()
        self.wbuf = bytearray()
        self.mode = "rpc"
        self.proc: Proc | None = None
        self.want_stdin = False
        self.want_out: tuple[bool, bool] = (True, True)
        self.closing = False   # close once wbuf is flushed
        self.closed = False
        self.read_eof = False


class Supervisor:
    def __init__(self, root: str, exec_root: str, runtime_root: str | None = None) -> None:
        self.root = os.path.abspath(root)
        self.exec_root = os.path.abspath(exec_root)
        self.runtime_root = runtime_root or os.path.join(self.exec_root, "runtime")
        self.runtime = Runtime(root=self.runtime_root, warn=lambda message: None, precompile_seccomp=True)
        self.sel = selectors.DefaultSelector()
        self.handlers: dict[int, tuple[object, int]] = {}  # fd -> (callback(fd, mask), events)
        self.containers: dict[str, Proc] = {}
        self.execs: dict[str, Proc] = {}
        self.by_pid: dict[int, Proc] = {}
        self.by_fd: dict[int, Proc] = {}
        self.subscribers: list[Conn] = []
        self.draining: list[Proc] = []
        self.stopping = False
        self.listener: socket.socket | None = None
        self.sock_path = os.path.join(self.exec_root, "supervisor.sock")
        self.pid_path = os.path.join(self.exec_root, "supervisor.pid")
        self._wake_r = self._wake_w = -1
        self._devnull = -1
        self._warm_until = 0.0

    # -- fd bookkeeping ---------------------------------------------------------------
    def _set(self, fd: int, callback: object, events: int) -> None:
        old = self.handlers.get(fd)
        if events == 0:
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
            sock.bind("supervisor.sock")
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
        become_subreaper()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        os.register_at_fork(after_in_child=_reset_child_signals)
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
                    entry[0](key.fd, mask)  # type: ignore[operator]
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
        for proc in list(self.containers.values()) + list(self.execs.values()):
            if proc.log is not None:
                proc.log.close()

    def _log_error(self, message: str) -> None:
        try:
            with open(os.path.join(self.exec_root, "supervisor.log"), "a") as f:
                f.write(f"{timestamp()} {message}\n")
        except OSError:
            pass

    # -- children -----------------------------------------------------------------------
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
                self._exited(proc, _exit_code(status))
            # anything else: an orphan reparented to us (we are the subreaper); reaped, done.

    def _exited(self, proc: Proc, code: int) -> None:
        if proc.reaped_at:
            return
        proc.exit_code = code
        proc.finished_at = timestamp()
        proc.reaped_at = time.monotonic()
        if proc.kind == "container":
            proc.oom_killed = self._oom_killed(proc.key)
        if not proc.outs:
            self._finish(proc)
        else:
            # Output still in the pipes: read to EOF (bounded by DRAIN_GRACE) before reporting.
            self.draining.append(proc)
            self._update_out(proc)

    def _oom_killed(self, container: str) -> bool:
        try:
            record = rstate.load(self.runtime_root, container)
            if not record.get("cgroup"):
                return False
            from ..runtime.cgroups import manager_from_state
            return bool(manager_from_state(record["cgroup"]).oom_killed())
        except Exception:  # noqa: BLE001 - the cgroup may be gone already
            return False

    def _finish(self, proc: Proc) -> None:
        """The process exited and its output is drained: report it."""
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
        key = "container" if proc.kind == "container" else "exec_id"
        event = {"event": "exit", key: proc.key, "exit_code": proc.exit_code, "oom_killed": proc.oom_killed,
                 "time": proc.finished_at}
        if proc.kind == "exec":
            event["container"] = proc.container
        line = fastjson.dumps(event).encode() + b"\n"
        for conn in list(self.subscribers):
            self._send(conn, line)
            if len(conn.wbuf) > SUBSCRIBER_MAX:
                self._close(conn)
        self._end_attachers(proc)

    def _end_attachers(self, proc: Proc) -> None:
        if proc.status != "exited" or (proc.held and not proc.attachers):
            return
        for conn in list(proc.attachers):
            conn.closing = True
            self._flush(conn)

    # -- process output ------------------------------------------------------------------
    def _update_out(self, proc: Proc) -> None:
        want = not self._blocked(proc)
        for fd in proc.outs:
            events = self._events(fd) & EV_WRITE
            if want:
                events |= EV_READ
            self._set(fd, self._on_output if events else None, events)
        proc.paused = not want

    def _blocked(self, proc: Proc) -> bool:
        if proc.hold and proc.held is not None and proc.held_size > HIGH:
            return True
        return any(len(c.wbuf) > HIGH for c in proc.attachers)

    def _on_output(self, fd: int, mask: int) -> None:
        proc = self.by_fd.get(fd)
        if proc is None:
            self._forget(fd)
            return
        if mask & EV_WRITE and fd == proc.stdin_fd:
            self._write_stdin(proc)
        if not mask & EV_READ or fd not in proc.outs:
            return
        stream = proc.outs[fd]
        try:
            data = os.read(fd, CHUNK)
        except BlockingIOError:
            return
        except OSError as e:  # EIO on a pty master: the last slave holder is gone
            if e.errno not in (errno.EIO, errno.EBADF):
                self._log_error(f"read {proc.key}: {e}")
            data = b""
        if not data:
            self._close_out(proc, fd)
            return
        self._deliver(proc, stream, data)

    def _deliver(self, proc: Proc, stream: int, data: bytes) -> None:
        if proc.log is not None:
            proc.log.write(_STREAM_NAMES[stream], data)
        if proc.attachers:
            for conn in list(proc.attachers):
                self._send_output(conn, stream, data)
        elif proc.hold and proc.held is not None:
            proc.held.append((stream, data))
            proc.held_size += len(data)
        if self._blocked(proc) and not proc.paused:
            self._update_out(proc)

    def _send_output(self, conn: Conn, stream: int, data: bytes) -> None:
        proc = conn.proc
        if proc is None or not conn.want_out[0 if stream == STDOUT else 1]:
            return
        if proc.tty:
            self._send(conn, data)
        else:
            self._send(conn, struct.pack(">BxxxI", stream, len(data)) + data)

    def _close_out(self, proc: Proc, fd: int, final: bool = False) -> None:
        stream = proc.outs.pop(fd, None)
        if stream is None:
            return
        if final:  # past the grace period: take what is there without waiting for EOF
            try:
                while True:
                    data = os.read(fd, CHUNK)
                    if not data:
                        break
                    self._deliver(proc, stream, data)
            except OSError:
                pass
        if proc.log is not None:
            proc.log.flush(_STREAM_NAMES[stream])
        self.by_fd.pop(fd, None)
        if fd == proc.stdin_fd:  # the pty master: stdin goes with it
            proc.stdin_fd = -1
            proc.stdin_buf.clear()
        self._forget(fd)
        os.close(fd)
        if not proc.outs and proc.reaped_at and proc.status != "exited":
            self._finish(proc)

    # -- process stdin -----------------------------------------------------------------
    def _stdin_data(self, proc: Proc, data: bytes) -> None:
        if proc.stdin_fd < 0 or proc.stdin_eof:
            return
        proc.stdin_buf += data
        self._write_stdin(proc)

    def _write_stdin(self, proc: Proc) -> None:
        fd = proc.stdin_fd
        if fd < 0:
            return
        while proc.stdin_buf:
            try:
                n = os.write(fd, proc.stdin_buf[:CHUNK])
            except BlockingIOError:
                break
            except OSError:  # EPIPE, EIO: nobody reads it any more
                proc.stdin_buf.clear()
                if not proc.tty:
                    self._close_stdin(proc)
                return
            del proc.stdin_buf[:n]
        events = self._events(fd)
        if proc.stdin_buf:
            self._set(fd, self._on_output, events | EV_WRITE)
        else:
            if events & EV_WRITE:
                self._set(fd, self._on_output, events & ~EV_WRITE)
            if proc.stdin_eof and not proc.tty:
                self._close_stdin(proc)
                return
        self._update_attach_reads(proc)

    def _close_stdin(self, proc: Proc) -> None:
        fd = proc.stdin_fd
        if fd < 0 or fd in proc.outs:  # the pty master is closed with the output
            return
        proc.stdin_fd = -1
        proc.stdin_buf.clear()
        self.by_fd.pop(fd, None)
        self._forget(fd)
        os.close(fd)

    def _update_attach_reads(self, proc: Proc) -> None:
        full = len(proc.stdin_buf) > HIGH
        for conn in proc.attachers:
            if conn.want_stdin and not conn.read_eof:
                self._conn_events(conn, read=not full)

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
            if conn.want_stdin and conn.proc is not None:
                self._stdin_data(conn.proc, data)
            return
        if conn.mode != "rpc":
            return  # subscribers have nothing to say
        conn.rbuf += data
        while not conn.closed and conn.mode == "rpc":
            nl = conn.rbuf.find(b"\n")
            if nl < 0:
                if len(conn.rbuf) > MAX_LINE:
                    self._reply_error(conn, None, "invalid", "request line too long")
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
            if conn.want_stdin and conn.proc is not None:
                self._stdin_data(conn.proc, rest)

    def _on_conn_eof(self, conn: Conn) -> None:
        conn.read_eof = True
        if conn.mode == "attach":
            proc = conn.proc
            if conn.want_stdin and proc is not None:  # half-close: the process's stdin ends
                proc.stdin_eof = True
                if not proc.tty:
                    self._write_stdin(proc)
            self._conn_events(conn, read=False)
            return
        if conn.mode == "subscribe" or not conn.wbuf:
            self._close(conn)  # pending replies (wait) have nobody to go to
            return
        conn.closing = True
        self._conn_events(conn, read=False)

    def _all_procs(self) -> list[Proc]:
        return list(self.containers.values()) + list(self.execs.values())

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
        proc = conn.proc
        if proc is not None and proc.paused and len(conn.wbuf) < LOW and not self._blocked(proc):
            self._update_out(proc)

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
        proc = conn.proc
        if proc is not None:
            if conn in proc.attachers:
                proc.attachers.remove(conn)
            conn.proc = None
            if proc.paused and not self._blocked(proc):
                self._update_out(proc)
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
                raise OpError("invalid", f"bad request: {e}") from None
            if not isinstance(req, dict):
                raise OpError("invalid", "a request is a JSON object")
            rid = req.get("id")
            op = req.get("op")
            handler = getattr(self, f"op_{op}", None) if isinstance(op, str) and op.isidentifier() else None
            if handler is None:
                raise OpError("invalid", f"unknown op: {op!r}")
            result = handler(conn, rid, req)
            if result is not None:
                self._reply(conn, rid, result)
        except OpError as e:
            self._reply_error(conn, rid, e.code, e.message)
        except ContainerNotFound as e:
            self._reply_error(conn, rid, "not_found", str(e))
        except (ContainerExists, BadState) as e:
            self._reply_error(conn, rid, "conflict", str(e))
        except RuntimeError_ as e:
            self._reply_error(conn, rid, "invalid", str(e))
        except (KeyError, TypeError, ValueError) as e:
            self._reply_error(conn, rid, "invalid", f"bad request: {type(e).__name__}: {e}")
        except Exception as e:  # noqa: BLE001 - errors are replies, never crashes
            from ..runtime.errors import describe
            self._log_error(f"request {line[:200]!r}: {type(e).__name__}: {e}")
            self._reply_error(conn, rid, "internal", describe(e))

    def _container(self, req: dict) -> Proc:
        cid = req.get("container")
        if not isinstance(cid, str) or not cid:
            raise OpError("invalid", "container is required")
        proc = self.containers.get(cid)
        if proc is None:
            raise OpError("not_found", f"no such container: {cid}")
        return proc

    def _target(self, req: dict) -> Proc:
        exec_id = req.get("exec_id")
        if exec_id:
            proc = self.execs.get(exec_id)
            if proc is None:
                raise OpError("not_found", f"no such exec: {exec_id}")
            return proc
        return self._container(req)

    def op_ping(self, conn: Conn, rid: object, req: dict) -> dict:
        return {"pid": os.getpid(), "version": VERSION}

    def op_warm(self, conn: Conn, rid: object, req: dict) -> dict:
        """A container is about to be created: start paying the cgroup migration's grace period."""
        self._warm_cgroups()
        return {}

    def _warm_cgroups(self) -> None:
        """Moving a new init into its cgroups first waits an RCU grace period (5-16 ms) when no
        cgroup migration happened lately (linux/cgroup_lock.py): a helper thread pays it now,
        in parallel with the create, and keeps the lock warm (a no-op write of its own pid
        every 3 ms) for a second, so that containers started in a row do not pay it again."""
        now = time.monotonic()
        if now < self._warm_until:
            return
        from ..linux.cgroup_lock import MigrationLockWarmer
        try:
            MigrationLockWarmer(give_up_after=WARM_FOR)
        except RuntimeError:  # no thread to be had: only an optimisation
            return
        self._warm_until = now + WARM_FOR - 0.05

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
        self.by_pid[proc.pid] = proc
        self._update_out(proc)

    @staticmethod
    def _size(req: dict) -> tuple[int, int] | None:
        size = req.get("console_size")
        if not size:
            return None
        h, w = int(size[0]), int(size[1])
        return (h, w) if h > 0 and w > 0 else None

    def op_create(self, conn: Conn, rid: object, req: dict) -> dict:
        self._warm_cgroups()
        cid = req.get("container")
        bundle = req.get("bundle")
        if not isinstance(cid, str) or not cid or not isinstance(bundle, str) or not bundle:
            raise OpError("invalid", "container and bundle are required")
        try:
            rstate.check_id(cid)
        except BadState as e:
            raise OpError("invalid", str(e)) from None
        if cid in self.containers:
            raise OpError("conflict", f"container {cid} exists")
        tty = bool(req.get("tty"))
        log_cfg = req.get("log")
        log = None
        if log_cfg is not None:
            if not isinstance(log_cfg, dict) or not log_cfg.get("path"):
                raise OpError("invalid", "log needs a path")
            log = JsonLog(str(log_cfg["path"]), size_option(log_cfg.get("max_size")),
                          count_option(log_cfg.get("max_file")))
        size = self._size(req)
        proc = Proc("container", cid, cid, tty)
        proc.bundle = os.path.abspath(bundle)
        proc.exit_file = os.path.join(os.path.dirname(proc.bundle), "exit.json")
        proc.log = log
        stdio, theirs = self._pipes(proc, tty, bool(req.get("stdin")))
        opts = CreateOptions(stdio=stdio, own_terminal=tty)
        master = None
        try:
            try:
                proc.pid = self.runtime.create(cid, proc.bundle, opts)
            finally:
                for fd in theirs:
                    os.close(fd)
            if tty:
                if opts.terminal_receiver is None:
                    self._kill_failed_create(cid)
                    raise OpError("invalid", "tty requested but the bundle's process.terminal is false")
                master = console_mod.recv_master(opts.terminal_receiver)
                if size:
                    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
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

    def _kill_failed_create(self, cid: str) -> None:
        try:
            self.runtime.delete(cid, force=True)
        except Exception:  # noqa: BLE001
            pass

    def op_start(self, conn: Conn, rid: object, req: dict) -> dict:
        proc = self._container(req)
        if proc.status != "created" or proc.reaped_at:
            raise OpError("conflict", f"container {proc.key} is {proc.status if not proc.reaped_at else 'exited'}; "
                                      "it cannot be started")
        self.runtime.start(proc.key)
        proc.status = "running"
        proc.started_at = timestamp()
        return {"started_at": proc.started_at}

    def op_kill(self, conn: Conn, rid: object, req: dict) -> dict:
        proc = self._container(req)
        sig = int(req.get("signal") or signal.SIGTERM)
        if proc.status == "exited" or proc.reaped_at:
            raise OpError("conflict", f"container {proc.key} is not running")
        self.runtime.kill(proc.key, sig, bool(req.get("all")))
        return {}

    def op_delete(self, conn: Conn, rid: object, req: dict) -> dict:
        """Deletes the container, killing it first if it still runs."""
        proc = self._container(req)
        if not proc.reaped_at:
            self.by_pid.pop(proc.pid, None)
            self._exited(proc, self._kill_and_wait(proc))
        if proc.status != "exited":
            self._finish(proc)  # the init is gone; its pipes hold at most what is buffered
        try:
            self.runtime.delete(proc.key, force=True)
        except ContainerNotFound:
            pass
        del self.containers[proc.key]
        for exec_id in proc.execs:
            ex = self.execs.pop(exec_id, None)
            if ex is not None and ex.status != "exited":
                self._finish(ex)
        return {}

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
                return _exit_code(status)
            if time.monotonic() > deadline:
                return 137
            if not thawed and time.monotonic() > deadline - 9.5:
                thawed = True
                try:
                    self.runtime.resume(proc.key)
                except Exception:  # noqa: BLE001 - not paused
                    pass
            time.sleep(0.002)

    def op_exec(self, conn: Conn, rid: object, req: dict) -> dict | None:
        container = self._container(req)
        exec_id = req.get("exec_id")
        if not isinstance(exec_id, str) or not exec_id:
            raise OpError("invalid", "exec_id is required")
        if exec_id in self.execs:
            raise OpError("conflict", f"exec {exec_id} exists")
        if container.status != "running" or container.reaped_at:
            raise OpError("conflict", f"container {container.key} is not running")
        process = req.get("process")
        if not isinstance(process, dict) or not process.get("args"):
            raise OpError("invalid", "process with args is required")
        tty = bool(req.get("tty"))
        process = dict(process, terminal=tty)
        size = self._size(req)
        if tty and size:
            process["consoleSize"] = {"height": size[0], "width": size[1]}
        proc = Proc("exec", exec_id, container.key, tty)
        attach = bool(req.get("attach"))
        proc.hold = not attach and not req.get("detach")
        proc.held = [] if proc.hold else None
        stdio, theirs = self._pipes(proc, tty, bool(req.get("stdin")))
        opts = ExecOptions(stdio=stdio, own_terminal=tty, detach=True)
        master = None
        try:
            try:
                proc.pid = self.runtime.exec(container.key, process, opts)
            finally:
                for fd in theirs:
                    os.close(fd)
            if tty and opts.terminal_receiver is not None:
                master = console_mod.recv_master(opts.terminal_receiver)
        except BaseException:
            self._discard_fds(proc)
            raise
        finally:
            if opts.terminal_receiver is not None:
                opts.terminal_receiver.close()
        proc.status = "running"
        proc.started_at = timestamp()
        self.execs[exec_id] = proc
        container.execs.append(exec_id)
        self._adopt(proc, master)
        if attach:
            self._reply(conn, rid, {"pid": proc.pid})
            self._start_attach(conn, proc, bool(req.get("stdin")), True, True)
            return None
        return {"pid": proc.pid}

    def op_resize(self, conn: Conn, rid: object, req: dict) -> dict:
        proc = self._target(req)
        h, w = int(req.get("height") or 0), int(req.get("width") or 0)
        if h <= 0 or w <= 0:
            raise OpError("invalid", "height and width must be positive")
        if proc.tty and proc.stdin_fd >= 0:
            fcntl.ioctl(proc.stdin_fd, termios.TIOCSWINSZ, struct.pack("HHHH", h, w, 0, 0))
        return {}

    def op_wait(self, conn: Conn, rid: object, req: dict) -> dict | None:
        proc = self._target(req)
        if proc.status == "exited":
            return proc.exit_fields()
        proc.waiters.append((conn, rid))
        return None

    def op_list(self, conn: Conn, rid: object, req: dict) -> dict:
        out = []
        for p in self.containers.values():
            out.append({"container": p.key, "pid": p.pid, "status": p.status, "exit_code": p.exit_code,
                        "oom_killed": p.oom_killed, "started_at": p.started_at, "finished_at": p.finished_at})
        return {"containers": out}

    def op_attach(self, conn: Conn, rid: object, req: dict) -> None:
        proc = self._target(req)
        self._reply(conn, rid, {})
        self._start_attach(conn, proc, bool(req.get("stdin")), req.get("stdout", True) is not False,
                           req.get("stderr", True) is not False)
        return None

    def _start_attach(self, conn: Conn, proc: Proc, stdin: bool, stdout: bool, stderr: bool) -> None:
        conn.mode = "attach"
        conn.proc = proc
        conn.want_stdin = stdin and proc.stdin_fd >= 0
        conn.want_out = (stdout, stderr)
        proc.attachers.append(conn)
        if proc.held is not None:  # an exec's output from before anybody attached
            held, proc.held, proc.held_size = proc.held, None, 0
            proc.hold = False
            for stream, data in held:
                self._send_output(conn, stream, data)
        if not conn.want_stdin:
            # Still watch for the client hanging up, but its bytes go nowhere.
            pass
        if proc.status == "exited":
            conn.closing = True
            self._flush(conn)
        elif proc.paused and not self._blocked(proc):
            self._update_out(proc)

    def op_subscribe(self, conn: Conn, rid: object, req: dict) -> None:
        self._reply(conn, rid, {})
        conn.mode = "subscribe"
        self.subscribers.append(conn)
        return None


def _preload_runtime() -> None:
    """Import now what every container init would otherwise import after its fork (the root
    filesystem code, the console, seccomp with libseccomp open): the supervisor's forks start
    warm, and the inits only run."""
    from ..linux import caps
    from ..runtime import console, mountopts, rootfs  # noqa: F401
    from ..runtime import seccomp
    caps.last_cap()
    try:
        seccomp.prepare()
    except OSError:
        pass  # no libseccomp: containers with a profile fail at create, as before


def main(root: str, exec_root: str) -> int:
    _preload_runtime()
    sup = Supervisor(root, exec_root)
    sup.serve()
    return 0
