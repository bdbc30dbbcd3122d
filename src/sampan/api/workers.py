"""Blocking engine and image-store calls off the event loop: short calls on a small pool,
long ones (start, pull, load, waits, streams) on a large one, and blocking iterators (logs,
events) bridged to ``async for`` with back-pressure and cancellation."""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Callable, Iterator

_DONE = object()


class _Failed:
    """What the worker thread hands over when the iterator raised."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Abandoned(Exception):
    """The consumer went away: the producing thread stops."""


class Workers:
    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="api")
        self.long_pool = ThreadPoolExecutor(max_workers=256, thread_name_prefix="api-long")
        self.stopping = threading.Event()  # set at shutdown: streams end

    async def run(self, fn: Callable[..., Any], *args: Any, long: bool = False, **kw: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.long_pool if long else self.pool, lambda: fn(*args, **kw))

    async def iterate(self, make: Callable[[], Iterator[Any]]) -> AsyncIterator[Any]:
        """Run a blocking iterator in a thread; yield its items on the loop. The thread stops
        when the consumer stops (a client that went away) or at shutdown."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue(maxsize=256)
        abandoned = threading.Event()

        def put(item: Any) -> None:
            fut = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
            while True:
                try:
                    fut.result(timeout=0.5)
                    return
                except TimeoutError:
                    if abandoned.is_set():
                        fut.cancel()
                        raise _Abandoned from None

        def produce() -> None:
            it = None
            try:
                it = make()
                for item in it:
                    if abandoned.is_set() or self.stopping.is_set():
                        break
                    put(item)
                put(_DONE)
            except _Abandoned:
                pass
            except BaseException as e:  # noqa: BLE001 - re-raised on the loop
                if not abandoned.is_set():
                    try:
                        put(_Failed(e))
                    except _Abandoned:
                        pass
            finally:
                close = getattr(it, "close", None)
                if close is not None:
                    close()

        fut = loop.run_in_executor(self.long_pool, produce)
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    break
                if isinstance(item, _Failed):
                    raise item.error
                yield item
        finally:
            abandoned.set()
            while not queue.empty():
                queue.get_nowait()
            fut.add_done_callback(lambda f: f.exception())

    def close(self) -> None:
        self.stopping.set()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.long_pool.shutdown(wait=False, cancel_futures=True)
