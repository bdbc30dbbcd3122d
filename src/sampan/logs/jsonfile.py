"""Docker's json-file log driver: the writer (one JSON object per line, rotated at a size
cap) and the reader (rotated files, since/until/tail/timestamps, follow across rotations).

A line is ``{"log": "text\\n", "stream": "stdout", "time": "2026-...Z"}``. A line longer
than PARTIAL_MAX is written in pieces without a newline, as Docker does; the reader gives
every piece as it was written.
"""
from __future__ import annotations

import json
import os
import time
from typing import BinaryIO, Callable, Iterator

from .. import fastjson
from ..timefmt import parse_rfc3339, parse_time_arg, rfc3339_ns
from ..units import parse_size

DEFAULT_MAX_SIZE = 10 * 1024 * 1024
DEFAULT_MAX_FILE = 3
PARTIAL_MAX = 16 * 1024  # a line longer than this is logged in pieces, as Docker does
FOLLOW_POLL = 0.1        # seconds between looks at a followed log that has nothing new


def size_option(value: object, default: int = DEFAULT_MAX_SIZE) -> int:
    """The max-size log option (bytes or "10m", "512k"); unset or 0 means the default.
    Raises ValueError for a size that is not one."""
    if value is None or value == "":
        return default
    size = parse_size(value)
    return size if size > 0 else default


def count_option(value: object, default: int = DEFAULT_MAX_FILE) -> int:
    """The max-file log option: how many files (the live one and the rotated ones) to keep."""
    if value is None or value == "":
        return default
    count = int(str(value))
    if count < 1:
        raise ValueError(f"invalid max-file: {value!r}")
    return count


class JsonLog:
    """Appends json-file lines to `path`, rotating to path.1 .. path.<max_file-1>."""

    def __init__(self, path: str, max_size: int = DEFAULT_MAX_SIZE, max_file: int = DEFAULT_MAX_FILE) -> None:
        self.path = path
        self.max_size = max_size
        self.max_file = max(1, max_file)
        self.fd = -1
        self.size = 0
        self._open()
        # The partial last line of each stream (no newline yet).
        self.partial: dict[str, bytes] = {}

    def _open(self) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self.size = os.fstat(self.fd).st_size

    def _rotate(self) -> None:
        """path -> path.1 -> ... -> path.<max_file-1>; path itself never disappears (a new
        file replaces it atomically), so a reader following the log never finds it missing."""
        os.close(self.fd)
        self.fd = -1
        if self.max_file > 1:
            for n in range(self.max_file - 1, 1, -1):
                try:
                    os.replace(f"{self.path}.{n - 1}", f"{self.path}.{n}")
                except FileNotFoundError:
                    pass
            try:
                os.unlink(f"{self.path}.1")
            except FileNotFoundError:
                pass
            try:
                os.link(self.path, f"{self.path}.1")
            except OSError:  # no hard links here: a plain rename (a moment without the file)
                os.replace(self.path, f"{self.path}.1")
        tmp = f"{self.path}.new"
        fd = os.open(tmp, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
        os.replace(tmp, self.path)
        self.fd = fd
        self.size = 0

    def _entry(self, stream: str, line: bytes, when: str) -> None:
        text = line.decode("utf-8", "replace")
        record = f'{{"log":{fastjson.dumps(text)},"stream":"{stream}","time":"{when}"}}\n'.encode()
        if self.size and self.size + len(record) > self.max_size:
            self._rotate()
        os.write(self.fd, record)
        self.size += len(record)

    def write(self, stream: str, data: bytes) -> None:
        """Logs the complete lines of data (after what is left of the stream's last chunk)."""
        if self.fd < 0:
            return
        when = rfc3339_ns()
        buf = self.partial.pop(stream, b"") + data if stream in self.partial else data
        start = 0
        try:
            while True:
                nl = buf.find(b"\n", start)
                if nl < 0:
                    break
                while nl + 1 - start > PARTIAL_MAX:  # a long line: in pieces, the last with its newline
                    self._entry(stream, buf[start:start + PARTIAL_MAX], when)
                    start += PARTIAL_MAX
                self._entry(stream, buf[start:nl + 1], when)
                start = nl + 1
            rest = buf[start:]
            while len(rest) >= PARTIAL_MAX:
                self._entry(stream, rest[:PARTIAL_MAX], when)
                rest = rest[PARTIAL_MAX:]
        except OSError:
            return  # a full or failing disk loses log lines, never the container
        if rest:
            self.partial[stream] = rest

    def flush(self, stream: str | None = None) -> None:
        """Logs the unterminated last line(s), at EOF."""
        for name in [stream] if stream else list(self.partial):
            rest = self.partial.pop(name, b"")
            if rest and self.fd >= 0:
                try:
                    self._entry(name, rest, rfc3339_ns())
                except OSError:
                    pass

    def close(self) -> None:
        self.flush()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# -- reading ------------------------------------------------------------------------------


def parse_tail(value: object) -> int | None:
    """The API's `tail`: "all", "", None or a negative number -> None (everything), else a
    line count. Raises ValueError for text that is not one."""
    if value is None or value == "" or value == "all":
        return None
    count = int(str(value))
    return None if count < 0 else count


def _time_bound(value: float | str | None) -> float | None:
    if value is None or isinstance(value, float):
        return value
    return parse_time_arg(value)


def rotated_files(path: str) -> list[str]:
    """The log's files, oldest first: path.<n> .. path.1, then path."""
    directory, base = os.path.split(path)
    numbered: list[tuple[int, str]] = []
    try:
        names = os.listdir(directory or ".")
    except OSError:
        names = []
    for name in names:
        suffix = name[len(base) + 1:] if name.startswith(base + ".") else ""
        if suffix.isdigit():
            numbered.append((int(suffix), os.path.join(directory, name)))
    return [p for _, p in sorted(numbered, reverse=True)] + [path]


class _Filter:
    """One json-file line -> (stream, bytes) as `logs` shows it, or None when filtered out."""

    def __init__(self, stdout: bool, stderr: bool, since: float | None, until: float | None,
                 timestamps: bool) -> None:
        self.want = {"stdout": stdout, "stderr": stderr}
        self.since, self.until, self.timestamps = since, until, timestamps

    def __call__(self, line: bytes) -> tuple[str, bytes] | None:
        try:
            entry = json.loads(line)
        except ValueError:
            return None  # a line cut short by a crash of the writer
        if not isinstance(entry, dict):
            return None
        stream = entry.get("stream", "stdout")
        if not self.want.get(stream, False):
            return None
        when = entry.get("time", "")
        if self.since is not None or self.until is not None:
            ts = parse_rfc3339(when)
            if self.since is not None and ts < self.since:
                return None
            if self.until is not None and ts > self.until:
                return None
        data = str(entry.get("log", "")).encode("utf-8", "surrogateescape")
        if self.timestamps:
            data = when.encode() + b" " + data
        return stream, data


def read(path: str, *, stdout: bool = True, stderr: bool = True, since: float | str | None = None,
         until: float | str | None = None, tail: int | None = None, follow: bool = False,
         timestamps: bool = False, is_running: Callable[[], bool] = lambda: False,
         wait: Callable[[float], object] = time.sleep,
         stopped: Callable[[], bool] = lambda: False) -> Iterator[tuple[str, bytes]]:
    """The log at `path` (and its rotated files) as (stream name, bytes) pieces.

    since/until: unix seconds or what parse_time_arg takes; tail: the last N lines of what
    is there (None: all). With follow, it goes on with what the writer appends (across
    rotations) while is_running() says so, and until `until` passes or stopped() says so;
    wait(seconds) is how it idles (an engine passes its condition's wait to wake early);
    once the process has stopped it returns after reading what was flushed at its exit.
    """
    emit = _Filter(stdout, stderr, _time_bound(since), _time_bound(until), timestamps)
    files, live = _open_all(path)
    lines: list[bytes] = []
    try:
        for f in files:
            lines += f.read().splitlines()  # (the live file's last line is complete: whole records)
    finally:
        for f in files:
            if f is not live:
                f.close()
    shown = (x for x in map(emit, lines) if x)
    try:
        if tail is not None:
            yield from (list(shown)[-tail:] if tail else [])
        else:
            yield from shown
        if follow:
            # on from where the live file was read to, in that very file: a rotation since then
            # is followed from it like any other
            yield from _follow(path, live, emit, is_running, wait, stopped, emit.until)
    finally:
        if live is not None:
            live.close()


def _open_all(path: str) -> tuple[list[BinaryIO], BinaryIO | None]:
    """The log's files open, oldest first, and the live one among them (None: no log yet).
    A rotation while they are opened moves them under the names listed: then again, until
    the names and their files are the same after the opening as before it (a name missing
    at the opening must be missing still, or the file it got meanwhile would be skipped;
    no file may be open twice, or it would be read twice)."""
    while True:
        names = rotated_files(path)
        files: list[BinaryIO | None] = []
        for name in names:
            try:
                files.append(open(name, "rb"))
            except OSError:
                files.append(None)
        opened = [(name, os.fstat(f.fileno()).st_ino if f is not None else None) for name, f in zip(names, files)]
        seen = [ino for _, ino in opened if ino is not None]
        # (one file under two names: a rotation between its link to path.1 and the new path)
        if len(set(seen)) == len(seen) and _inodes(rotated_files(path)) == opened:
            return [f for f in files if f is not None], files[-1]
        for f in files:
            if f is not None:
                f.close()


def _inodes(names: list[str]) -> list[tuple[str, int | None]]:
    out = []
    for name in names:
        try:
            out.append((name, os.stat(name).st_ino))
        except OSError:
            out.append((name, None))
    return out


def _follow(path: str, live: BinaryIO | None, emit: _Filter, is_running: Callable[[], bool],
            wait: Callable[[float], object], stopped: Callable[[], bool],
            until: float | None) -> Iterator[tuple[str, bytes]]:
    """Follows the log from ``live``'s position (the caller closes ``live``), or from the
    start of the log that appears when there was none. Files are told apart only while they
    are open: the writer deletes its oldest file at each rotation and the kernel gives the
    new one that inode number at once, so a number seen earlier names nothing for sure."""
    buf = b""
    f = live
    try:
        while not stopped():
            if f is None:
                f = _next_file(path, None)
            chunk = f.read() if f is not None else b""
            if chunk:
                buf += chunk
                *complete, buf = buf.split(b"\n")
                for line in complete:
                    piece = emit(line)
                    if piece:
                        yield piece
                continue
            try:  # rotated: the rest of the old file is read; go on with the one after it
                if f is not None and os.stat(path).st_ino != os.fstat(f.fileno()).st_ino:
                    # the writer may have appended its last lines to this file between the
                    # read that found its end and the rotation seen now: read it once more
                    # (nothing is written to it after the rotation)
                    if chunk := f.read():
                        buf += chunk
                        continue
                    after = _next_file(path, f)
                    if after is not None:
                        if f is not live:
                            f.close()
                        f = after
                        continue
            except OSError:
                pass
            if not is_running():
                # what the writer flushed at the exit, then the end
                wait(0.05)
                if f is not None and (chunk := f.read()):
                    buf += chunk
                    continue
                return
            if until is not None and time.time() > until:
                return
            wait(FOLLOW_POLL)
    finally:
        if f is not None and f is not live:
            f.close()


def _next_file(path: str, current: BinaryIO | None) -> BinaryIO | None:
    """The log file written after ``current`` (several rotations may have happened while a
    follower read it), open; the oldest one left when ``current`` is gone already or None;
    None when there is no log."""
    files, _ = _open_all(path)
    inodes = [os.fstat(x.fileno()).st_ino for x in files]
    here = os.fstat(current.fileno()).st_ino if current is not None else None
    i = inodes.index(here) + 1 if here in inodes else 0
    chosen = files[i] if i < len(files) else None
    for x in files:
        if x is not chosen:
            x.close()
    return chosen
