"""`sampan build` on a terminal: a live view of the legacy builder's stream (rich, imported
only here). Each step done is one line with its time (or CACHED); the running step shows
its elapsed time and the last lines of its output (times first: a long instruction is cut
at the screen's edge); the builder's bookkeeping lines
(`---> Running in …`, `Removing intermediate container …`, `---> <id>`) are left out. A
failed step's output is printed whole (its last 200 lines) so the error can be read."""
from __future__ import annotations

import collections
import re
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

_STEP = re.compile(r"Step \d+/\d+ : ")
_BOOKKEEPING = re.compile(r" ---> (Running in [0-9a-f]+|[0-9a-f]{12,})$|Removing intermediate container [0-9a-f]+$")
_CACHED = " ---> Using cache"
_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
TAIL_LINES = 6
KEPT_LINES = 200


class _Step:
    def __init__(self, title: str) -> None:
        self.title = title
        self.started = time.monotonic()
        self.cached = False
        self.output: collections.deque[str] = collections.deque(maxlen=KEPT_LINES)


class LiveSteps:
    def __init__(self, out: Any, sent_line: Callable[[int], str]) -> None:
        from rich.console import Console
        from rich.live import Live
        self.console = Console(file=out, force_terminal=True, highlight=False, soft_wrap=False)
        self.live = Live(self, console=self.console, refresh_per_second=10, transient=True)
        self.started = time.monotonic()
        self.step: _Step | None = None
        self.partial = ""   # text of a line not ended yet
        self.sent_line = sent_line

    def __enter__(self) -> LiveSteps:
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._flush_partial()
        self._end_step("✔" if exc[0] is None else "✘")
        self.live.stop()

    # ------------------------------------------------------------ what the builder sends
    def sent(self, size: int) -> None:
        self._print(self.sent_line(size).rstrip("\n"))

    def message(self, msg: dict) -> None:
        if msg.get("stream"):
            self._text(msg["stream"])
        elif msg.get("status"):   # a pull of the base image
            line = f"{msg['id']}: {msg['status']}" if msg.get("id") else msg["status"]
            if self.step is not None:
                self.step.output.append(line)
            else:
                self._print(line)

    def failed(self) -> None:
        self._flush_partial()
        step = self.step
        self._end_step("✘")
        if step is not None:
            for line in step.output:
                self._print(f"  {line}", style="dim")

    # ------------------------------------------------------------ lines
    def _text(self, text: str) -> None:
        *lines, self.partial = (self.partial + text).split("\n")
        for line in lines:
            self._line(line)

    def _flush_partial(self) -> None:
        if self.partial:
            self._line(self.partial)
            self.partial = ""

    def _line(self, line: str) -> None:
        line = line.rsplit("\r", 1)[-1]   # a progress bar's last state
        if _STEP.match(line):
            self._end_step("✔")
            self.step = _Step(line)
        elif line == _CACHED and self.step is not None:
            self.step.cached = True
        elif _BOOKKEEPING.match(line):
            pass
        elif line.startswith("Successfully "):
            self._end_step("✔")
            self._print(line)
        elif self.step is not None:
            self.step.output.append(line)
        else:
            self._print(line)

    def _end_step(self, mark: str) -> None:
        step, self.step = self.step, None
        if step is None:
            return
        took = "CACHED" if step.cached else f"{time.monotonic() - step.started:.1f}s"
        self._print(f"{mark} {took:>6} {step.title}", style="red" if mark == "✘" else None)

    def _print(self, line: str, style: str | None = None) -> None:
        self.console.print(line, style=style, markup=False, no_wrap=True, overflow="ellipsis")

    # ------------------------------------------------------------ the live part
    def __rich__(self) -> Any:
        from rich.text import Text
        now = time.monotonic()
        lines = []
        if self.step is not None:
            spin = _SPINNER[int(now * 10) % len(_SPINNER)]
            lines.append(Text(f"{spin} {now - self.step.started:5.1f}s {self.step.title}", style="bold"))
            tail = list(self.step.output)[-TAIL_LINES:]
            lines += [Text(f"  {line}", style="dim") for line in tail]
        lines.append(Text(f"Building {now - self.started:.1f}s", style="blue"))
        view = Text("\n").join(lines)
        view.no_wrap, view.overflow = True, "ellipsis"   # one screen line each: the live area's height is known
        return view
