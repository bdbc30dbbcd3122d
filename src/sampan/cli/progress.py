"""Progress of pulls, pushes, loads and saves: on a terminal, rich bars (one a layer with
its bytes, and the total); elsewhere docker's one-line statuses ("abc123: Pull
complete"), or nothing. Called as ``progress(event, key, done, total)`` from several
threads: events "start"/"resume", "progress", "done", "exists", "mounted", "manifest".
rich is imported only when bars are drawn."""
from __future__ import annotations

import threading
from typing import TextIO


def short(key: str) -> str:
    """12 hex digits of a digest, or the key as given (at most 12 characters)."""
    return key.split(":", 1)[-1][:12]


class Transfer:
    """``labels`` name the states: {"active": "Downloading", "done": "Pull complete",
    "exists": "Already exists", "mounted": "Mounted"}; lines=True prints a line per
    finished layer when not on a terminal."""

    def __init__(self, stream: TextIO, labels: dict[str, str], *, quiet: bool = False, lines: bool = False) -> None:
        self.stream = stream
        self.labels = labels
        self.lines = lines and not quiet
        self.bars = not quiet and stream.isatty()
        self._lock = threading.Lock()
        self._progress = None
        self._tasks: dict[str, int] = {}
        self._totals: dict[str, tuple[int, int]] = {}
        self._overall: int | None = None

    def __enter__(self) -> Transfer:
        if self.bars:
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                      TransferSpeedColumn(), console=Console(file=self.stream), transient=False)
            self._progress.start()
            self._overall = self._progress.add_task("Total", total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, event: str, key: str, done: int, total: int) -> None:
        with self._lock:
            if self._progress is not None:
                self._bar(event, key, done, total)
            elif self.lines and event in ("done", "exists", "mounted") and event in self.labels:
                self.stream.write(f"{short(key)}: {self.labels[event]}\n")
                self.stream.flush()

    def _bar(self, event: str, key: str, done: int, total: int) -> None:
        p = self._progress
        assert p is not None
        if event == "manifest":
            return
        label = self.labels.get(event if event in ("done", "exists", "mounted") else "active", "")
        task = self._tasks.get(key)
        if task is None:
            task = self._tasks[key] = p.add_task("", total=total if total >= 0 else None)
        total = total if total >= 0 else done
        p.update(task, description=f"{short(key)}: {label}", completed=done, total=total or None)
        self._totals[key] = (done, total)
        if self._overall is not None:
            p.update(self._overall, completed=sum(d for d, _ in self._totals.values()),
                     total=sum(t for _, t in self._totals.values()) or None)
