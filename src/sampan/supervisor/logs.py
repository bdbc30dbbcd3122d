"""Docker's json-file log driver: one JSON object per line, rotated at a size cap."""
from __future__ import annotations

import os
import time

from .. import fastjson

DEFAULT_MAX_SIZE = 10 * 1024 * 1024
DEFAULT_MAX_FILE = 3
PARTIAL_MAX = 16 * 1024  # a line longer than this is logged in pieces, as Docker does

_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024 ** 2, "mb": 1024 ** 2, "g": 1024 ** 3, "gb": 1024 ** 3}


def parse_size(value: object, default: int) -> int:
    """10485760, "10m", "512k", "1g" -> bytes; None, "" or <= 0 -> default."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise ValueError(f"invalid size: {value!r}")
    if isinstance(value, int):
        return value if value > 0 else default
    text = str(value).strip().lower()
    digits = text.rstrip("bkmg")
    unit = text[len(digits):]
    if unit not in _UNITS:
        raise ValueError(f"invalid size: {value!r}")
    try:
        number = float(digits)
    except ValueError:
        raise ValueError(f"invalid size: {value!r}") from None
    size = int(number * _UNITS[unit])
    return size if size > 0 else default


def timestamp(ns: int | None = None) -> str:
    """RFC 3339 with nanoseconds in UTC, as Docker writes it: 2026-01-02T03:04:05.123456789Z."""
    ns = time.time_ns() if ns is None else ns
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


class JsonLog:
    """Appends json-file lines to `path`, rotating to path.1 .. path.<max_file-1>."""

    def __init__(self, path: str, max_size: int = DEFAULT_MAX_SIZE, max_file: int = DEFAULT_MAX_FILE) -> None:
        self.path = path
        self.max_size = max_size
        self.max_file = max(1, max_file)
        self.fd = -1
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
        when = timestamp()
        buf = self.partial.pop(stream, b"") + data if stream in self.partial else data
        start = 0
        try:
            while True:
                nl = buf.find(b"\n", start)
                if nl < 0:
                    break
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
                    self._entry(name, rest, timestamp())
                except OSError:
                    pass

    def close(self) -> None:
        self.flush()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
