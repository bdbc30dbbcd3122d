"""A small synchronous client of the supervisor (docs/ENGINE.md "Supervisor protocol").

    client = Client(exec_root)
    client.call("create", container=cid, bundle=path, tty=False, stdin=False, log={...})
    sock = client.attach(container=cid, stdin=True)     # a plain socket, stream after the ok line
    with client.subscribe(after=seq, epoch=epoch) as events:
        for event in events: ...                        # events.gap: reconcile with list/exec_state
    ensure_running(root, exec_root) -> the supervisor's pid, starting it when absent
"""
from __future__ import annotations

import itertools
import json
import os
import socket
import sys
import threading
import time
from typing import Any, Iterator

from .. import errors, paths

PIDFILE = "supervisor.pid"
READ_ONLY_OPS = ("ping", "list", "exec_state", "pids", "stats")  # retried once on a fresh connection
LOCKFILE = "supervisor.lock"


class SupervisorError(errors.Error):
    """An error reply or an unreachable supervisor. `code` (= `kind`) is one of sampan.errors'
    kinds: not_found, conflict, invalid, internal, or unavailable when it cannot be reached."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, kind=code if code in errors.HTTP_STATUS else errors.INTERNAL)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


def _connect(exec_root: str, timeout: float | None) -> socket.socket:
    path = paths.supervisor_socket(exec_root)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        if len(path.encode()) < 100:
            sock.connect(path)
        else:  # socket paths are limited to 108 bytes: connect through /proc/self/fd
            dfd = os.open(exec_root, os.O_PATH | os.O_CLOEXEC)
            try:
                sock.connect(f"/proc/self/fd/{dfd}/{os.path.basename(path)}")
            finally:
                os.close(dfd)
    except OSError as e:
        sock.close()
        raise SupervisorError("unavailable", f"supervisor at {path}: {e.strerror or e}") from None
    return sock


class _Lines:
    """Reads lines off a socket without reading past the one asked for when exact=True."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def line(self, exact: bool = False) -> bytes:
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                line = bytes(self.buf[:nl])
                del self.buf[:nl + 1]
                return line
            chunk = self.sock.recv(1 if exact else 65536)
            if not chunk:
                raise SupervisorError("unavailable", "the supervisor closed the connection")
            self.buf += chunk


def _check(reply: dict) -> dict:
    if not reply.get("ok"):
        raise SupervisorError(str(reply.get("code") or "internal"), str(reply.get("error") or "supervisor error"))
    return reply


class Client:
    """One connection for requests (thread-safe, reconnects when broken); `wait`, `attach` and
    `subscribe` use connections of their own."""

    def __init__(self, exec_root: str, timeout: float | None = 60.0) -> None:
        self.exec_root = exec_root
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._lines: _Lines | None = None
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
            self._sock = self._lines = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, sock: socket.socket, lines: _Lines, op: str, fields: dict, exact: bool = False) -> dict:
        rid = next(self._ids)
        sock.sendall(json.dumps({"op": op, "id": rid, **fields}).encode() + b"\n")
        while True:
            reply = json.loads(lines.line(exact))
            if reply.get("id") == rid:
                return reply

    def call(self, op: str, **fields: Any) -> dict:
        """Sends one request and returns the reply's fields (with "id" and "ok");
        raises SupervisorError for an error reply. `wait` blocks until the process exits."""
        if op == "wait":
            sock = _connect(self.exec_root, None)
            try:
                return _check(self._request(sock, _Lines(sock), op, fields))
            except OSError as e:
                raise SupervisorError("unavailable", f"supervisor: {e}") from None
            finally:
                sock.close()
        with self._lock:
            for attempt in (0, 1):
                if self._sock is None:
                    self._sock = _connect(self.exec_root, self.timeout)
                    self._lines = _Lines(self._sock)
                try:
                    assert self._lines is not None
                    reply = self._request(self._sock, self._lines, op, fields)
                    break
                except (OSError, SupervisorError, ValueError) as e:
                    self._sock.close()
                    self._sock = self._lines = None
                    # Only a request that cannot have been acted on is retried: a fresh
                    # connection that failed is reported.
                    if attempt or op not in READ_ONLY_OPS:
                        if isinstance(e, SupervisorError):
                            raise
                        raise SupervisorError("unavailable", f"supervisor: {e}") from None
        return _check(reply)

    def _stream(self, op: str, fields: dict) -> tuple[socket.socket, dict]:
        sock = _connect(self.exec_root, self.timeout)
        try:
            reply = _check(self._request(sock, _Lines(sock), op, fields, exact=True))
        except BaseException:
            sock.close()
            raise
        sock.settimeout(None)
        return sock, reply

    def attach(self, container: str | None = None, exec_id: str | None = None, stdin: bool = False,
               stdout: bool = True, stderr: bool = True) -> socket.socket:
        """A socket carrying the process's output (Docker's multiplexed frames without a tty,
        raw bytes with one); what is written to it goes to the process's stdin, and
        sock.shutdown(SHUT_WR) closes that stdin. It reaches EOF once the process has exited
        and all its output is delivered."""
        fields: dict[str, Any] = {"stdin": stdin, "stdout": stdout, "stderr": stderr}
        if exec_id:
            fields["exec_id"] = exec_id
        else:
            fields["container"] = container
        return self._stream("attach", fields)[0]

    def exec_attached(self, container: str, exec_id: str, process: dict, tty: bool = False, stdin: bool = False,
                      console_size: list[int] | None = None) -> tuple[int, socket.socket]:
        """exec with the output stream on the same connection (no output can be missed):
        (pid, socket) as attach() gives it."""
        fields: dict[str, Any] = {"container": container, "exec_id": exec_id, "process": process, "tty": tty,
                                  "stdin": stdin, "attach": True}
        if console_size:
            fields["console_size"] = console_size
        sock, reply = self._stream("exec", fields)
        return reply["pid"], sock

    def subscribe(self, after: int | None = None, epoch: int | None = None) -> "Subscription":
        """Exit events from now on (subscribed when this returns, not at the first next()).
        With `after` (the `seq` of the last event seen) and `epoch` (of the supervisor that
        sent it), the events since are replayed first, or `gap` says some are lost."""
        fields: dict[str, Any] = {}
        if after is not None:
            fields["after"] = after
            if epoch is not None:
                fields["epoch"] = epoch
        sock, reply = self._stream("subscribe", fields)
        return Subscription(sock, reply, after)


class Subscription:
    """The supervisor's exit events, in order: {"event": "exit", "seq", "container" or
    "exec_id" (+ "container"), "exit_code", "oom_killed", "finished_at"}. Iteration ends when
    the supervisor goes away (or dropped this subscriber for not reading); resubscribe then
    with after=last_seq, epoch=epoch, and reconcile (`list`, `exec_state`) when `gap` is set.

    seq: the last event's number when subscribed; epoch: which supervisor numbered them;
    last_seq: the last event read (`after` until the replayed events are read: a subscription
    that breaks before has them replayed again)."""

    def __init__(self, sock: socket.socket, reply: dict, after: int | None = None) -> None:
        self.sock = sock
        self.seq = int(reply.get("seq") or 0)
        self.epoch = reply.get("epoch")
        self.gap = bool(reply.get("gap"))
        self.last_seq = self.seq if after is None or self.gap else after
        self._lines = _Lines(sock)

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        if self.sock.fileno() < 0:
            raise StopIteration
        try:
            event = json.loads(self._lines.line())
        except (SupervisorError, OSError, ValueError):
            self.close()
            raise StopIteration from None
        self.last_seq = int(event.get("seq") or self.last_seq)
        return event

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- starting the supervisor -----------------------------------------------------------


def lock_exclusive(exec_root: str) -> int | None:
    """Takes <exec_root>/supervisor.lock for the life of this process; None if taken."""
    import fcntl
    os.makedirs(exec_root, mode=0o711, exist_ok=True)
    fd = os.open(os.path.join(exec_root, LOCKFILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def ping(exec_root: str, timeout: float = 2.0) -> int | None:
    """The supervisor's pid if it answers, else None."""
    try:
        with Client(exec_root, timeout=timeout) as c:
            return int(c.call("ping")["pid"])
    except (SupervisorError, OSError, ValueError):
        return None


def ensure_running(root: str, exec_root: str, timeout: float = 15.0) -> int:
    """Starts the supervisor for (root, exec_root) unless its socket answers; returns its pid.
    It runs detached (double fork, own session, stdio on /dev/null) and writes
    <exec_root>/supervisor.pid. Concurrent callers end with the one supervisor."""
    pid = ping(exec_root)
    if pid:
        return pid
    root, exec_root = os.path.abspath(root), os.path.abspath(exec_root)
    os.makedirs(exec_root, mode=0o711, exist_ok=True)
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    argv = [sys.executable, "-m", "sampan.supervisor", "--root", root, "--exec-root", exec_root]
    first = os.fork()
    if first == 0:
        try:
            os.setsid()
            if os.fork() == 0:
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                os.closerange(3, 65536)
                os.chdir("/")
                os.execve(sys.executable, argv, env)
        finally:
            os._exit(0)
    os.waitpid(first, 0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = ping(exec_root, timeout=1.0)
        if pid:
            return pid
        time.sleep(0.02)
    raise SupervisorError("unavailable", f"the supervisor for {exec_root} did not start within {timeout:.0f}s")
