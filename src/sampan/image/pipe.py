"""An in-memory pipe from a thread that reads a stream (an archive, an HTTP body) to a
thread that unpacks it, so that one sequential read feeds several unpackers at once.

The bytes in flight in all the pipes that share a ``Budget`` are bounded: the reader
blocks when the budget is spent and goes on as the unpackers consume. A consumer that
needs no more data (the layer was already there, or it failed) calls ``release``: what
is queued is dropped and later writes are discarded, so the reader never waits for it.
"""
from __future__ import annotations

import threading
from collections import deque


class PipeAborted(Exception):
    """The producer gave up (its source failed or was interrupted)."""


class Budget:
    """Bytes that may sit in pipes at once; one write larger than the whole budget still
    goes through when nothing else is queued, so a big chunk never deadlocks."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._cond = threading.Condition()

    def take(self, n: int) -> None:
        with self._cond:
            while self.used and self.used + n > self.limit:
                self._cond.wait()
            self.used += n

    def give(self, n: int) -> None:
        if n:
            with self._cond:
                self.used -= n
                self._cond.notify_all()


class Pipe:
    """One producer, one consumer. ``read`` returns the next chunk (at most ``n`` bytes
    when n > 0), b"" at the end, or raises ``PipeAborted``."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self._chunks: deque[bytes] = deque()
        self._cond = threading.Condition()
        self._eof = False
        self._error: BaseException | None = None
        self._released = False

    # -- producer side
    def write(self, data: bytes) -> None:
        if self._released or not data:
            return
        self.budget.take(len(data))
        with self._cond:
            if self._released:
                self.budget.give(len(data))
                return
            self._chunks.append(data)
            self._cond.notify()

    def close(self) -> None:
        """End of data."""
        with self._cond:
            self._eof = True
            self._cond.notify()

    def abort(self, error: BaseException | None = None) -> None:
        """The consumer's next read raises ``error`` (PipeAborted by default)."""
        with self._cond:
            self._error = error or PipeAborted("the source of the data failed")
            self._cond.notify()

    @property
    def released(self) -> bool:
        return self._released

    # -- consumer side
    def read(self, n: int = -1) -> bytes:
        with self._cond:
            while not self._chunks and not self._eof and self._error is None:
                self._cond.wait()
            if self._error is not None:
                raise self._error
            if not self._chunks:
                return b""
            chunk = self._chunks.popleft()
            if 0 < n < len(chunk):
                self._chunks.appendleft(chunk[n:])
                chunk = chunk[:n]
        self.budget.give(len(chunk))
        return chunk

    def release(self) -> None:
        """The consumer is done: drop what is queued and discard later writes."""
        with self._cond:
            self._released = True
            dropped = sum(len(c) for c in self._chunks)
            self._chunks.clear()
        self.budget.give(dropped)
