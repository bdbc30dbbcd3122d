"""A process's stdio in the supervisor: its output read into the log and to its attachers
(bounded buffers: a slow reader pauses the output, nothing is lost), its stdin fed from
the attachers, and the attach/resize ops."""
from __future__ import annotations

import errno
import fcntl
import os
import struct
import termios

from .. import errors
from .loop import EV_READ, EV_WRITE, Loop
from .procs import CHUNK, HIGH, LOW, STDOUT, STREAM_NAMES, Conn, OpError, Proc


class Streams(Loop):
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
            proc.log.write(STREAM_NAMES[stream], data)
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
            proc.log.flush(STREAM_NAMES[stream])
        self.by_fd.pop(fd, None)
        if fd == proc.stdin_fd:  # the pty master: stdin goes with it
            proc.stdin_fd = -1
            proc.stdin_buf.clear()
        self._forget(fd)
        os.close(fd)
        if not proc.outs and proc.reaped_at and proc.status != "exited":
            self._finish(proc)

    # -- process stdin -----------------------------------------------------------------
    def _attach_data(self, conn: Conn, data: bytes) -> None:
        proc = conn.proc
        if not conn.want_stdin or proc is None or proc.stdin_fd < 0 or proc.stdin_eof:
            return
        proc.stdin_buf += data
        self._write_stdin(proc)

    def _attach_eof(self, conn: Conn) -> None:
        proc = conn.proc
        if conn.want_stdin and proc is not None:  # half-close: the process's stdin ends
            proc.stdin_eof = True
            if not proc.tty:
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
        full = len(proc.stdin_buf) > HIGH
        for conn in proc.attachers:
            if conn.want_stdin and not conn.read_eof:
                self._conn_events(conn, read=not full)

    def _close_stdin(self, proc: Proc) -> None:
        fd = proc.stdin_fd
        if fd < 0 or fd in proc.outs:  # the pty master is closed with the output
            return
        proc.stdin_fd = -1
        proc.stdin_buf.clear()
        self.by_fd.pop(fd, None)
        self._forget(fd)
        os.close(fd)

    # -- attachers ------------------------------------------------------------------------
    def _drained(self, conn: Conn) -> None:
        proc = conn.proc
        if proc is not None and proc.paused and len(conn.wbuf) < LOW and not self._blocked(proc):
            self._update_out(proc)

    def _detach(self, conn: Conn) -> None:
        proc = conn.proc
        if proc is None:
            return
        if conn in proc.attachers:
            proc.attachers.remove(conn)
        conn.proc = None
        if proc.paused and not self._blocked(proc):
            self._update_out(proc)

    def _end_attachers(self, proc: Proc) -> None:
        """Close the streams of an exited process (after its exit is recorded: exits.py)."""
        if proc.status != "exited" or (proc.held and not proc.attachers):
            return
        for conn in list(proc.attachers):
            conn.closing = True
            self._flush(conn)

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
        if proc.status == "exited":
            conn.closing = True
            self._flush(conn)
        elif proc.paused and not self._blocked(proc):
            self._update_out(proc)

    def _target(self, req: dict) -> Proc:
        exec_id = req.get("exec_id")
        if exec_id:
            proc = self.execs.get(exec_id)
            if proc is None:
                raise OpError(errors.NOT_FOUND, f"no such exec: {exec_id}")
            return proc
        return self._container(req)

    def _container(self, req: dict) -> Proc:
        cid = req.get("container")
        if not isinstance(cid, str) or not cid:
            raise OpError(errors.INVALID, "container is required")
        proc = self.containers.get(cid)
        if proc is None:
            raise OpError(errors.NOT_FOUND, f"no such container: {cid}")
        return proc

    def op_attach(self, conn: Conn, rid: object, req: dict) -> None:
        proc = self._target(req)
        self._reply(conn, rid, {})
        self._start_attach(conn, proc, bool(req.get("stdin")), req.get("stdout", True) is not False,
                           req.get("stderr", True) is not False)
        return None

    def op_resize(self, conn: Conn, rid: object, req: dict) -> dict:
        proc = self._target(req)
        h, w = int(req.get("height") or 0), int(req.get("width") or 0)
        if h <= 0 or w <= 0:
            raise OpError(errors.INVALID, "height and width must be positive")
        if proc.tty and proc.stdin_fd >= 0:
            set_size(proc.stdin_fd, (h, w))
        return {}


def set_size(master: int, size: tuple[int, int]) -> None:
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))


def console_size(req: dict) -> tuple[int, int] | None:
    size = req.get("console_size")
    if not size:
        return None
    h, w = int(size[0]), int(size[1])
    return (h, w) if h > 0 and w > 0 else None
