"""Docker's JSON progress streams (pull, push, load) shown as the docker CLI shows them: on a
terminal, rich bars (one a layer with its bytes); elsewhere the one-line statuses
("abc123: Pull complete") without the progress messages. ``stream`` messages (load's
"Loaded image: …") are written as they are; an ``error`` message ends the stream as a
StreamError. rich is imported only when bars are drawn (never on the way to a `run`
that finds its image)."""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Iterable, TextIO

from .command import StreamError


class JSONProgress:
    def __init__(self, stream: TextIO, quiet: bool = False) -> None:
        self.stream = stream
        self.quiet = quiet   # statuses left out; ``stream`` text and errors still shown
        self.bars = not quiet and stream.isatty()
        self._progress: Any = None
        self._tasks: dict[str, int] = {}

    def __enter__(self) -> JSONProgress:
        if self.bars:
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                      TransferSpeedColumn(), console=Console(file=self.stream), transient=False)
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def show_all(self, messages: Iterable[dict]) -> None:
        for msg in messages:
            self.show(msg)

    def show(self, msg: dict) -> None:
        if msg.get("error") or msg.get("errorDetail"):
            raise StreamError(msg.get("error") or (msg.get("errorDetail") or {}).get("message") or "unknown error")
        if msg.get("stream"):
            self._write(msg["stream"])
            return
        status = msg.get("status")
        if not status or self.quiet:
            return
        key = msg.get("id") or ""
        detail = msg.get("progressDetail") or {}
        if self._progress is not None and key:
            self._bar(key, status, detail)
        elif "current" not in detail:   # progress messages are for terminals only
            self._write(f"{key}: {status}\n" if key else f"{status}\n")

    def _write(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text, end="", markup=False, highlight=False)
        else:
            self.stream.write(text)
            self.stream.flush()

    def _bar(self, key: str, status: str, detail: dict) -> None:
        p = self._progress
        task = self._tasks.get(key)
        if task is None:
            task = self._tasks[key] = p.add_task("", total=None)
        if "current" in detail:
            p.update(task, description=f"{key}: {status}", completed=detail["current"],
                     total=detail.get("total") or None)
            return
        # a layer's state (Waiting, Pull complete, Already exists): the bar full once done
        done = "complete" in status.lower() or status == "Pushed"
        total = next((t.total for t in p.tasks if t.id == task), None)
        p.update(task, description=f"{key}: {status}", completed=total if done and total else None)
