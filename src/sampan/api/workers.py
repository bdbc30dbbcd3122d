"""Blocking engine and image-store calls off the event loop: short calls on a small pool,
long ones (start, pull, load, waits, streams) on a large one, and blocking iterators (logs,
events) bridged to ``async for`` with back-pressure and cancellation."""
from __future__ import annotations

import asyncio
import fcntl
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, BinaryIO, Callable, Iterator, TypeVar

from aiohttp import StreamReader, web

T = TypeVar("T")
_DONE = object()
_CHUNK = 1 << 20
_PIPE_BYTES = 1 << 20


def _pipe() -> tuple[int, int]:
    """A pipe between the loop and a worker thread, large enough for a chunk at a time."""
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    try:
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
    except OSError:
        pass  # (above /proc/sys/fs/pipe-max-size): the default size works, in smaller steps
    return read_fd, write_fd


class _PipeWriting(asyncio.Protocol):
    """Flow control for the loop's end of a pipe it writes into."""

    def __init__(self) -> None:
        self._resumed: asyncio.Future | None = None

    def pause_writing(self) -> None:
        self._resumed = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._resumed is not None and not self._resumed.done():
            self._resumed.set_result(None)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.resume_writing()  # the reader is gone: writers stop waiting

    async def drain(self) -> None:
        if self._resumed is not None:
            await self._resumed


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

    async def consume_body(self, body: StreamReader, consume: Callable[[BinaryIO], T]) -> T:
        """Run ``consume(stream)`` in a thread on a request body as it arrives (through a pipe:
        no spooling, and a slow consumer slows the client down). A consumer that returns or
        fails before the end stops the transfer."""
        loop = asyncio.get_running_loop()
        read_fd, write_fd = _pipe()
        reading = open(read_fd, "rb", buffering=_CHUNK)

        def run() -> T:
            with reading:
                return consume(reading)

        result = loop.run_in_executor(self.long_pool, run)
        transport, flow = await loop.connect_write_pipe(_PipeWriting, open(write_fd, "wb", buffering=0))

        async def pump() -> None:
            try:
                async for chunk in body.iter_any():
                    if transport.is_closing():
                        break  # the consumer is done
                    transport.write(chunk)
                    await flow.drain()
            finally:
                transport.close()  # end of the stream for the consumer

        pumping = asyncio.ensure_future(pump())
        try:
            return await result
        finally:
            pumping.cancel()
            transport.close()

    async def stream_response(self, request: web.Request, content_type: str,
                              produce: Callable[[BinaryIO], None]) -> web.StreamResponse:
        """A 200 whose body is what ``produce(out)``, in a thread, writes, sent as it comes
        (``out`` is a pipe: blobs go into it by sendfile). Raises what ``produce`` raised, or
        the client's going away (the answer is then cut short)."""
        resp = web.StreamResponse(status=200)
        resp.content_type = content_type
        await resp.prepare(request)
        loop = asyncio.get_running_loop()
        read_fd, write_fd = _pipe()
        writing = open(write_fd, "wb", buffering=0)

        def run() -> None:
            with writing:
                produce(writing)

        produced = loop.run_in_executor(self.long_pool, run)
        reader = asyncio.StreamReader(limit=2 * _CHUNK)
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                                    open(read_fd, "rb", buffering=0))
        try:
            while chunk := await reader.read(_CHUNK):
                await resp.write(chunk)
        except BaseException:
            transport.close()  # the producer's next write fails: it stops
            produced.add_done_callback(lambda f: f.cancelled() or f.exception())
            raise
        transport.close()
        await produced
        await resp.write_eof()
        return resp

    def close(self) -> None:
        self.stopping.set()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.long_pool.shutdown(wait=False, cancel_futures=True)
