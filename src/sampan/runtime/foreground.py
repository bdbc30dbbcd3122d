"""Waiting on a container process in the foreground, forwarding signals to it (run, exec)."""
from __future__ import annotations

import _signal as signal  # the signal module's enums cost more than a container start
import os

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
             signal.SIGWINCH, signal.SIGCONT)


def become_subreaper() -> None:
    """Orphans of our forks (the container's init once its first-stage parent exits) come to us."""
    from ..linux.process import set_child_subreaper
    set_child_subreaper()


class SignalForwarder:
    """While installed, the signals a runtime in the foreground forwards go to the container's
    process instead of taking their default action on the runtime (which would end it and
    leave the container behind). Installed before that process can run (it may be told to
    stop at once); signals that come before its pid is known are delivered once it is."""

    def __init__(self) -> None:
        self._pid: int | None = None
        self._pending: list[int] = []
        self._previous = {sig: signal.signal(sig, self._forward) for sig in FORWARDED}

    def target(self, pid: int) -> None:
        self._pid = pid
        pending, self._pending = self._pending, []
        for signum in pending:
            _send(pid, signum)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def __enter__(self) -> SignalForwarder:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.restore()

    def _forward(self, signum: int, _frame: object) -> None:
        if self._pid is None:
            self._pending.append(signum)
        else:
            _send(self._pid, signum)


def _send(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def wait(pid: int) -> int:
    """Wait for pid, reaping other orphans meanwhile; returns a shell-style exit code."""
    while True:
        try:
            got, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 255
        if got == pid:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def wait_with_terminal(pid: int, master: int) -> int:
    """Like wait(), while relaying our stdin/stdout to the container's pty (run/exec -t without
    a console socket). Our terminal, if any, goes raw so keys reach the container unchanged."""
    import fcntl
    import select
    import termios

    saved = None
    if os.isatty(0):
        saved = termios.tcgetattr(0)
        raw = termios.tcgetattr(0)
        raw[0] &= ~(termios.BRKINT | termios.ICRNL | termios.INPCK | termios.ISTRIP | termios.IXON)
        raw[1] &= ~termios.OPOST
        raw[3] &= ~(termios.ECHO | termios.ICANON | termios.IEXTEN | termios.ISIG)
        termios.tcsetattr(0, termios.TCSANOW, raw)

    def resize(_signum: int = 0, _frame: object = None) -> None:
        if os.isatty(0):
            fcntl.ioctl(master, termios.TIOCSWINSZ, fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8))

    resize()
    previous = signal.signal(signal.SIGWINCH, resize)
    readers = [master, 0]
    code = None
    try:
        while code is None:
            ready, _, _ = select.select(readers, [], [], 0.05)
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the last slave holder closed it
                    data = b""
                if data:
                    os.write(1, data)
                else:
                    readers.remove(master)
            if 0 in ready:
                data = os.read(0, 65536)
                if data:
                    os.write(master, data)
                else:
                    readers.remove(0)
            code = _reap_for(pid)
        while master in readers and select.select([master], [], [], 0)[0]:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            os.write(1, data)
        return code
    finally:
        signal.signal(signal.SIGWINCH, previous)
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        os.close(master)


def _reap_for(pid: int) -> int | None:
    while True:
        try:
            got, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return 255
        if got == 0:
            return None
        if got == pid:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
