"""Hijacked streams (attach, exec start): after the ``101 UPGRADED`` answer the connection's
transport is taken over, so bytes flow both ways unframed by HTTP and a client's half-close
reaches the process as stdin EOF. Also Docker's multiplexed framing for non-tty output."""
from __future__ import annotations

import asyncio
import fcntl
import socket
import struct
import termios
import time

from aiohttp import web

from .. import API_VERSION

RAW_STREAM = "application/vnd.docker.raw-stream"
MULTIPLEXED_STREAM = "application/vnd.docker.multiplexed-stream"
STREAM_NUMBERS = {"stdin": 0, "stdout": 1, "stderr": 2}
_BACKPRESSURE_BYTES = 1 << 20
_HEADERS_READ_TIMEOUT = 0.05
_HEADERS_READ_POLL = 0.0005


def content_type(tty: bool) -> str:
    return RAW_STREAM if tty else MULTIPLEXED_STREAM


def frame(stream: str, data: bytes) -> bytes:
    """One frame of a multiplexed stream: [stream, 0, 0, 0, size (big endian u32)] + data."""
    return struct.pack(">BxxxL", STREAM_NUMBERS.get(stream, 1), len(data)) + data


class RawProtocol(asyncio.Protocol):
    """A hijacked client connection: bytes in -> ``incoming``; half-close -> None in it."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.incoming: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.incoming.put_nowait(data)

    def eof_received(self) -> bool:
        self.incoming.put_nowait(None)
        return True  # keep our half open: the output still flows

    def connection_lost(self, exc: BaseException | None) -> None:
        self.incoming.put_nowait(None)
        if not self.closed.done():
            self.closed.set_result(None)


async def hijack(request: web.Request, tty: bool) -> RawProtocol:
    """Answer the upgrade and take the connection over."""
    upgrade = "upgrade" in request.headers.get("Connection", "").lower() or "Upgrade" in request.headers
    if upgrade:
        resp = web.StreamResponse(status=101, reason="UPGRADED")
        resp.headers["Connection"] = "Upgrade"
        resp.headers["Upgrade"] = "tcp"
    else:  # old clients: a 200 whose body is the raw stream
        resp = web.StreamResponse(status=200)
        resp.force_close()
        resp.content_length = None
    resp.headers["Content-Type"] = content_type(tty)
    resp.headers["Api-Version"] = API_VERSION
    await resp.prepare(request)
    if not upgrade:
        # no chunking: the rest of the connection is ours
        request._payload_writer.chunked = False  # type: ignore[attr-defined]
    await resp.write(b"")  # the headers go out now, not with the first output
    transport = request.transport
    assert transport is not None
    proto = RawProtocol(transport)
    handler = request.protocol
    tail = handler._message_tail  # type: ignore[attr-defined]  # (aiohttp's, after an upgrade)
    if tail:  # bytes the client sent right after its request (stdin ahead of the upgrade)
        proto.data_received(tail)
        handler._message_tail = b""  # type: ignore[attr-defined]
    transport.set_protocol(proto)
    transport.resume_reading()
    request["hijack_response"] = resp
    await _until_headers_read(transport)
    return proto


def _unread_by_peer(sock: socket.socket) -> int:
    """Bytes sent on a unix or TCP socket that the peer has not read yet (SIOCOUTQ)."""
    buf = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    return int.from_bytes(buf, "little", signed=True)


async def _until_headers_read(transport: asyncio.Transport) -> None:
    """Wait (a moment at most) until the client has read the answer's headers. A client that
    parses them with a buffered reader and then reads the stream from the raw socket (docker-py)
    loses output that arrived in the same read as the headers; Docker's slower process start
    leaves it that moment, a fast exec would not."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    deadline = time.monotonic() + _HEADERS_READ_TIMEOUT
    while time.monotonic() < deadline and not transport.is_closing():
        try:
            if transport.get_write_buffer_size() == 0 and _unread_by_peer(sock) <= 0:
                return
        except OSError:
            return  # not a socket that can tell: no wait
        await asyncio.sleep(_HEADERS_READ_POLL)


async def bridge(proto: RawProtocol, sock: socket.socket | None, stdin: bool) -> None:
    """Pump the hijacked client <-> a supervisor stream socket until the output ends."""
    transport = proto.transport
    if sock is None:
        transport.close()
        return
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)

    async def upstream() -> None:
        while True:
            data = await proto.incoming.get()
            if data is None:
                break
            if stdin:
                writer.write(data)
                try:
                    await writer.drain()
                except (ConnectionError, OSError):
                    return
        if stdin:
            try:
                if writer.can_write_eof():
                    writer.write_eof()
            except (ConnectionError, OSError):
                pass

    async def downstream() -> None:
        while not transport.is_closing():
            data = await reader.read(65536)
            if not data:
                break
            transport.write(data)
            # back-pressure: wait while the client is slow
            while transport.get_write_buffer_size() > _BACKPRESSURE_BYTES and not transport.is_closing():
                await asyncio.sleep(0.01)

    up = asyncio.ensure_future(upstream())
    down = asyncio.ensure_future(downstream())
    try:
        # until the output ends, or the client goes away (an attach to a container that is
        # never started would otherwise hold its supervisor stream forever)
        await asyncio.wait([down, proto.closed], return_when=asyncio.FIRST_COMPLETED)
        if down.done() and not down.cancelled():
            try:
                down.result()
            except (ConnectionError, OSError):
                pass
    finally:
        down.cancel()
        up.cancel()
        writer.close()
        if not transport.is_closing():
            transport.close()


def finish(request: web.Request) -> web.StreamResponse:
    """What a hijacking handler returns: the response already sent, the connection closed."""
    resp = request["hijack_response"]
    resp.force_close()
    return resp
