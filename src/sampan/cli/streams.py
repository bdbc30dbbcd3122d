"""The terminal side of attached containers and execs: raw mode, stdin copied to the
hijacked stream, its output (Docker's multiplexed frames unless a tty) to ours, and the
terminal's size sent on SIGWINCH.

On the path of every `sampan run`: termios, tty, threading and signal only when used."""
from __future__ import annotations

import _socket
import os
import sys

from ..stdcopy import demux
from .client import APIError, Client, _sock_chunks

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class RawTerminal:
    """The terminal in raw mode while a tty session runs."""

    def __init__(self, enable: bool) -> None:
        self.enable = enable and sys.stdin.isatty()
        self.saved = None

    def __enter__(self) -> "RawTerminal":
        if self.enable:
            import termios
            import tty
            self.saved = termios.tcgetattr(sys.stdin.fileno())
            tty.setraw(sys.stdin.fileno())
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.saved is not None:
            import termios
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, self.saved)


def _pump_stdin(sock: _socket.socket) -> None:
    fd = sys.stdin.fileno()
    try:
        while True:
            data = os.read(fd, 65536)
            if not data:
                break
            sock.sendall(data)
    except OSError:
        pass
    try:
        sock.shutdown(_socket.SHUT_WR)
    except OSError:
        pass


def stream_output(sock: _socket.socket, first: bytes, tty: bool, stdin: bool) -> None:
    """Copy a hijacked stream to our stdout/stderr (and stdin to it) until it ends."""
    if stdin:
        import threading
        threading.Thread(target=_pump_stdin, args=(sock,), daemon=True).start()
    out, err = sys.stdout.buffer, sys.stderr.buffer
    chunks = _sock_chunks(sock, first)
    if tty:
        for data in chunks:
            out.write(data)
            out.flush()
    else:
        for stream, data in demux(chunks):
            f = err if stream == 2 else out
            f.write(data)
            f.flush()


def watch_resize(client: Client, path: str) -> None:
    def resize(*_: Any) -> None:
        try:
            size = os.get_terminal_size(sys.stdout.fileno())
            client.post(path, h=size.lines, w=size.columns)
        except (OSError, APIError):
            pass
    if sys.stdout.isatty():
        import signal
        signal.signal(signal.SIGWINCH, resize)
        resize()


def save_response(resp: Any, output: str | None) -> None:
    """A tar the daemon streams (save, export) to ``output``, atomically (a temporary file
    beside it, renamed when complete), or to stdout."""
    if not output:
        out = sys.stdout.buffer
        while chunk := resp.read1():
            out.write(chunk)
        out.flush()
        return
    import tempfile
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(output)), prefix=".sampan-")
    try:
        with os.fdopen(fd, "wb") as f:
            while chunk := resp.read1():
                f.write(chunk)
        os.chmod(tmp, 0o644)
        os.replace(tmp, output)
    except BaseException:
        resp.close()
        os.unlink(tmp)
        raise

