"""/containers/{id}/exec and /exec/{id}/...: create, start (hijacked or detached), resize, inspect."""
from __future__ import annotations

from aiohttp import web

from .. import hijack
from ..backend import ContainerBackend
from ..params import json_response, query_int, read_json_object
from ..status import message_of
from ..workers import Workers
from . import Route

_EXIT_RECORD_TIMEOUT = 10.0


class ExecRoutes:
    def __init__(self, engine: ContainerBackend, workers: Workers) -> None:
        self.engine, self.workers = engine, workers

    def routes(self) -> list[Route]:
        return [("POST", "/containers/{id}/exec", self.create), ("POST", "/exec/{id}/start", self.start),
                ("POST", "/exec/{id}/resize", self.resize), ("GET", "/exec/{id}/json", self.inspect)]

    async def create(self, request: web.Request) -> web.Response:
        body = await read_json_object(request)
        exec_id = await self.workers.run(self.engine.exec_create, request.match_info["id"], body)
        return json_response({"Id": exec_id}, status=201)

    async def start(self, request: web.Request) -> web.StreamResponse:
        exec_id = request.match_info["id"]
        body = await read_json_object(request)
        detach, tty = bool(body.get("Detach")), bool(body.get("Tty"))
        if detach:
            await self.workers.run(self.engine.exec_start, exec_id, True, tty, long=True)
            return web.Response(status=200)
        size = body.get("ConsoleSize")
        await self.workers.run(self.engine.exec_inspect, exec_id)  # no such exec: a 404, not a stream
        # The 101 goes out before the process starts, as dockerd does: a client that reads the
        # stream from the raw socket after parsing the headers with a buffered reader (docker-py)
        # would lose output that came in the same read as the headers.
        proto = await hijack.hijack(request, tty)
        sock = None
        try:
            sock = await self.workers.run(self.engine.exec_start, exec_id, False, tty,
                                          size if size and any(size) else None, long=True)
        except Exception as e:  # noqa: BLE001 - after the 101, an error is text in the stream (as dockerd)
            text = (message_of(e) + "\r\n").encode()
            proto.transport.write(text if tty else hijack.frame("stdout", text))
        try:
            await hijack.bridge(proto, sock, stdin=True)
        finally:
            if sock is not None:
                sock.close()
        # Clients read the exit code (exec inspect) once the stream ends: end it only after
        # the engine has recorded that exit.
        try:
            await self.workers.run(self.engine.exec_wait, exec_id, _EXIT_RECORD_TIMEOUT)
        except Exception:  # noqa: BLE001 - the stream is over either way
            pass
        return hijack.finish(request)

    async def resize(self, request: web.Request) -> web.Response:
        height, width = query_int(request, "h", 0), query_int(request, "w", 0)
        await self.workers.run(self.engine.resize, "", height, width, exec_id=request.match_info["id"])
        return web.Response(status=200)

    async def inspect(self, request: web.Request) -> web.Response:
        return json_response(await self.workers.run(self.engine.exec_inspect, request.match_info["id"]))
