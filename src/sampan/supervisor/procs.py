"""The supervisor's records: a process it holds (a container's init or an exec) and a
client connection, with the limits both live within."""
from __future__ import annotations

import os
import signal
import socket
from typing import TYPE_CHECKING

from .. import errors

if TYPE_CHECKING:
    from ..logs.jsonfile import JsonLog
    from ..runtime.api import Runtime

CHUNK = 65536
HIGH = 256 * 1024     # an attacher / stdin / held-output buffer above this pauses its source
LOW = 64 * 1024       # ... which resumes once the buffer is below this
MAX_LINE = 4 * 1024 * 1024  # longest request line
SUBSCRIBER_MAX = 1024 * 1024  # a subscriber that lets this much pile up is dropped (it resubscribes)
EVENT_RING = 4096     # exit events kept for subscribers that resubscribe with `after`
DRAIN_GRACE = 2.0     # seconds to wait for EOF on a process's output after it exited
STDOUT, STDERR = 1, 2
STREAM_NAMES = {STDOUT: "stdout", STDERR: "stderr"}


class OpError(errors.Error):
    """A request the supervisor refuses; `code` is its kind on the wire (docs/ENGINE.md)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, kind=code)
        self.code = code
        self.message = message


def exit_code(status: int) -> int:
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return 255


def reset_child_signals() -> None:
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
                 "finished_at", "waiters", "reaped_at", "bundle", "paused", "frozen", "execs", "exit_file",
                 "runtime", "error")

    def __init__(self, kind: str, key: str, container: str, tty: bool, runtime: Runtime) -> None:
        self.kind = kind                 # "container" or "exec"
        self.key = key
        self.container = container
        self.runtime = runtime           # the container's runtime (an exec's: its container's)
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
        self.paused = False              # output reading paused by back-pressure
        self.frozen = False              # the container paused (cgroup freezer) by `pause`
        self.execs: list[str] = []
        self.exit_file = ""
        self.error = ""                  # why an exec's process could not be started

    def exit_fields(self) -> dict:
        return {"exit_code": self.exit_code, "oom_killed": self.oom_killed, "finished_at": self.finished_at}

    def state_fields(self) -> dict:
        """What `list` and `exec_state` answer for it."""
        fields = {"pid": self.pid, "status": self.status, "exit_code": self.exit_code, "oom_killed": self.oom_killed,
                  "started_at": self.started_at, "finished_at": self.finished_at}
        if self.kind == "container":
            fields.update(container=self.key, paused=self.frozen, runtime=self.runtime.name)
        else:
            fields.update(exec_id=self.key, container=self.container)
            if self.error:
                fields["error"] = self.error
        return fields


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
