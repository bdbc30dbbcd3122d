"""/volumes/...: list, create, inspect, remove, prune."""
from __future__ import annotations

from aiohttp import web

from ..backend import ContainerBackend
from ..params import json_response, query_bool, query_filters, read_json_object
from ..workers import Workers
from . import Route


class VolumeRoutes:
    def __init__(self, engine: ContainerBackend, workers: Workers) -> None:
        self.engine, self.workers = engine, workers

    def routes(self) -> list[Route]:
        return [("GET", "/volumes", self.list), ("POST", "/volumes/create", self.create),
                ("POST", "/volumes/prune", self.prune), ("GET", "/volumes/{name}", self.inspect),
                ("DELETE", "/volumes/{name}", self.delete)]

    async def list(self, request: web.Request) -> web.Response:
        return json_response(await self.workers.run(self.engine.volume_list, query_filters(request)))

    async def create(self, request: web.Request) -> web.Response:
        body = await read_json_object(request)
        return json_response(await self.workers.run(self.engine.volume_create, body), status=201)

    async def inspect(self, request: web.Request) -> web.Response:
        return json_response(await self.workers.run(self.engine.volume_inspect, request.match_info["name"]))

    async def delete(self, request: web.Request) -> web.Response:
        await self.workers.run(self.engine.volume_remove, request.match_info["name"], query_bool(request, "force"))
        return web.Response(status=204)

    async def prune(self, request: web.Request) -> web.Response:
        return json_response(await self.workers.run(self.engine.volume_prune, query_filters(request), long=True))
