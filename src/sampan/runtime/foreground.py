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


def wait(pid: int) -> int:
    """Wait for pid, reaping other orphans meanwhile; returns a shell-style exit code."""
    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        while True:
            try:
                got, status = os.waitpid(-1, 0)
            except ChildProcessError:
                return 255
            if got == pid:
                return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
