"""Docker's JSON progress streams (pull, push, load, import): the messages, their progress
bars, and the streaming of messages a worker thread produces."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, TypeVar

from aiohttp import web

from ..units import human_size
from .backend import Emit
from .params import json_line
from .status import message_of

T = TypeVar("T")
log = logging.getLogger("sampand")

_BAR_WIDTH = 50


def _size(n: int) -> str:
    return human_size(n, 4)  # Docker's units.HumanSize


def progress_bar(current: int, total: int) -> str:
    """What dockerd puts in a message's ``progress`` (JSONProgress.String at a wide terminal)."""
    if current <= 0 and total <= 0:
        return ""
    if total <= 0:
        return f"{_size(current):>8}"
    filled = min(int(current / total * 100) // 2, _BAR_WIDTH)
    return f"[{'=' * filled}>{' ' * (_BAR_WIDTH - filled)}] {_size(current):>8}/{_size(total)}"


def message(status: str, id: str = "", current: int | None = None, total: int | None = None) -> dict:
    """A progress message as dockerd writes it: per-layer ones carry an id and progressDetail."""
    msg: dict[str, Any] = {"status": status}
    if current is not None:
        msg["progressDetail"] = {"current": current, "total": total} if total else {"current": current}
        msg["progress"] = progress_bar(current, total or 0)
    elif id:
        msg["progressDetail"] = {}
    if id:
        msg["id"] = id
    return msg


class Throttle:
    """At most one progress message per layer every ``interval`` seconds, and always its last
    (as dockerd's progress readers): a fast transfer is not slowed by its own reporting."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}

    def due(self, id: str, current: int, total: int) -> bool:
        now = time.monotonic()
        last = current >= total > 0
        if not last and now - self._last.get(id, 0.0) < self.interval:
            return False
        self._last[id] = now
        return True


def error_message(exc: BaseException) -> dict:
    """How a failure is reported once the stream has begun (the status is sent)."""
    text = message_of(exc)
    return {"errorDetail": {"message": text}, "error": text}


class JSONStream:
    """Streams the messages that work on worker threads emits. With ``eager`` the 200 goes at
    once (as dockerd answers a load); otherwise with the first message, so that a job that
    fails before it said anything answers with its error's status (as dockerd's pull, push
    and import do)."""

    def __init__(self, request: web.Request, eager: bool = False) -> None:
        self.request = request
        self.eager = eager
        self.resp = web.StreamResponse(status=200)
        self.resp.content_type = "application/json"

    async def _write(self, msg: dict) -> None:
        if not self.resp.prepared:
            await self.resp.prepare(self.request)
        await self.resp.write(json_line(msg))

    async def run(self, start: Callable[[Emit], Awaitable[T]]) -> T | None:
        """Await ``start(emit)`` (work on threads that emit from there); returns its result, or
        None when it failed after the stream began (the failure is the stream's last message)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        done = object()

        def emit(msg: dict) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, msg)

        if self.eager:
            await self.resp.prepare(self.request)
        fut = asyncio.ensure_future(start(emit))
        fut.add_done_callback(lambda f: queue.put_nowait(done))
        try:
            while (msg := await queue.get()) is not done:
                await self._write(msg)
        except BaseException:
            # the client went away: the work finishes on its own (what it stored is kept)
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())
            raise
        try:
            return fut.result()
        except Exception as e:  # noqa: BLE001 - reported as dockerd does: status or last message
            if not self.resp.prepared:
                raise
            log.info("%s %s: %s", self.request.method, self.request.path, message_of(e))
            await self._write(error_message(e))
            return None

    async def finish(self, *messages: dict) -> web.StreamResponse:
        for msg in messages:
            await self._write(msg)
        if not self.resp.prepared:
            await self.resp.prepare(self.request)
        await self.resp.write_eof()
        return self.resp
