"""What a build says, as Docker's legacy builder says it: the JSON messages of the stream
({"stream": ...}, {"aux": {"ID": ...}}), the stderr colouring of RUN output, the order of
the output of stages built in parallel, and the Go formatting (%q, %v, durations) of the
commit comments that end up in images' history."""
from __future__ import annotations

import codecs
import threading
from typing import Callable

from .dockerfile.shell import go_quote

# emit(message): one message of the build's JSON stream.
Emit = Callable[[dict], None]

_STDERR_START, _STDERR_END = "\x1b[91m", "\x1b[0m"   # dockerd's stderr writer in a build stream


def short_id(image_id: str) -> str:
    """stringid.TruncateID: 12 hex digits, without the algorithm."""
    return image_id.split(":", 1)[-1][:12]


class StepOutput:
    """A RUN step's stdout and stderr as stream messages (stderr in red, as dockerd sends it);
    bytes that are not UTF-8 become U+FFFD, multi-byte characters split over reads are kept."""

    def __init__(self, emit: Emit) -> None:
        self.emit = emit
        self._decoders = {1: codecs.getincrementaldecoder("utf-8")("replace"),
                          2: codecs.getincrementaldecoder("utf-8")("replace")}

    def __call__(self, stream: int, data: bytes) -> None:
        text = self._decoders[2 if stream == 2 else 1].decode(data)
        if text:
            self.emit({"stream": f"{_STDERR_START}{text}{_STDERR_END}" if stream == 2 else text})

    def flush(self) -> None:
        for stream, decoder in self._decoders.items():
            rest = decoder.decode(b"", final=True)
            if rest:
                self(stream, rest.encode())


class OrderedOutput:
    """The stages' messages in stage order although stages run in parallel: the stage whose
    turn it is streams live, the others are held until every stage before them is done (so
    the stream reads as a sequential build's)."""

    def __init__(self, emit: Emit, order: list[int]) -> None:
        self._emit, self._order = emit, order
        self._held: dict[int, list[dict]] = {i: [] for i in order}
        self._done: set[int] = set()
        self._turn = 0
        self._lock = threading.Lock()

    def emitter(self, stage: int) -> Emit:
        def emit(msg: dict) -> None:
            with self._lock:
                if self._turn < len(self._order) and self._order[self._turn] == stage:
                    self._emit(msg)
                else:
                    self._held[stage].append(msg)
        return emit

    def finished(self, stage: int) -> None:
        """The stage is done: the next ones' held messages go out, in order."""
        with self._lock:
            self._done.add(stage)
            while self._turn < len(self._order) and self._order[self._turn] in self._done:
                self._turn += 1
                if self._turn < len(self._order):
                    nxt = self._order[self._turn]
                    for msg in self._held[nxt]:
                        self._emit(msg)
                    self._held[nxt].clear()


def go_list(words: list[str] | None) -> str:
    """Go's %v of a []string: [a b c]."""
    return "[" + " ".join(words or []) + "]"


def go_quoted_list(words: list[str] | None) -> str:
    """Go's %q of a []string: ["a" "b"]."""
    return "[" + " ".join(go_quote(w) for w in words or []) + "]"


def go_duration(seconds: float | None) -> str:
    """Go's time.Duration.String: 0s, 500ms, 5s, 1m30s, 2h0m0s."""
    ns = int(round((seconds or 0) * 1e9))
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return sign + _trim(ns / size) + unit
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    secs = _trim(rest / 1e9) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}"
    if minutes:
        return f"{sign}{minutes}m{secs}"
    return sign + secs


def _trim(value: float) -> str:
    return f"{value:.9f}".rstrip("0").rstrip(".")


_RUNE_ESCAPES = {7: "\\a", 8: "\\b", 9: "\\t", 10: "\\n", 11: "\\v", 12: "\\f", 13: "\\r", 39: "\\'", 92: "\\\\"}


def go_rune(n: int) -> str:
    """Go's %q of an int (strconv.QuoteRune): '\\x00', '\\x03', 'A'."""
    if n in _RUNE_ESCAPES:
        return f"'{_RUNE_ESCAPES[n]}'"
    if 32 <= n < 127:
        return f"'{chr(n)}'"
    return f"'\\x{n:02x}'" if n < 256 else f"'\\u{n:04x}'"


def healthcheck_comment(health: dict) -> str:
    """HEALTHCHECK's commit comment: Go's %q of the *HealthConfig (dockerd 20.10's fields)."""
    return "HEALTHCHECK &{%s %s %s %s %s}" % (
        go_quoted_list(health.get("Test")), go_quote(go_duration((health.get("Interval") or 0) / 1e9)),
        go_quote(go_duration((health.get("Timeout") or 0) / 1e9)),
        go_quote(go_duration((health.get("StartPeriod") or 0) / 1e9)), go_rune(int(health.get("Retries") or 0)))
