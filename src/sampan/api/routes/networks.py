"""/networks/...: list, inspect, create, remove, prune, connect, disconnect (as moby's
api/server/router/network). Connect and disconnect answer 200 with no body, as dockerd does."""
from __future__ import annotations

from aiohttp import web

from ..backend import ContainerBackend
from ..params import json_response, query_filters, read_json_object
from ..workers import Workers
from . import Route


class NetworkRoutes:
    def __init__(self, engine: ContainerBackend, workers: Workers) -> None:
        self.engine, self.workers = engine, workers

    def routes(self) -> list[Route]:
        n = "/networks/{id}"
        return [("GET", "/networks", self.list), ("GET", "/networks/", self.list),
                ("POST", "/networks/create", self.create), ("POST", "/networks/prune", self.prune),
                ("GET", n, self.inspect), ("DELETE", n, self.delete),
                ("POST", n + "/connect", self.connect), ("POST", n + "/disconnect", self.disconnect)]

    async def list(self, request: web.Request) -> web.Response:
        return json_response(await self.workers.run(self.engine.network_list, query_filters(request)))

    async def inspect(self, request: web.Request) -> web.Response:
        return json_response(await self.workers.run(self.engine.network_inspect, request.match_info["id"]))

    async def create(self, request: web.Request) -> web.Response:
        body = await read_json_object(request)
        return json_response(await self.workers.run(self.engine.network_create, body, long=True), status=201)

    async def delete(self, request: web.Request) -> web.Response:
        await self.workers.run(self.engine.network_remove, request.match_info["id"], long=True)
        return web.Response(status=204)

    async def prune(self, request: web.Request) -> web.Response:
        return json_response(await self.workers.run(self.engine.network_prune, query_filters(request), long=True))

    async def connect(self, request: web.Request) -> web.Response:
        body = await read_json_object(request)
        await self.workers.run(self.engine.network_connect, request.match_info["id"], body, long=True)
        return web.Response(status=200)

    async def disconnect(self, request: web.Request) -> web.Response:
        body = await read_json_object(request)
        await self.workers.run(self.engine.network_disconnect, request.match_info["id"], body, long=True)
        return web.Response(status=200)
