"""/_ping, /version, /info, /events, /system/df."""
from __future__ import annotations

import json
from typing import Callable

from aiohttp import web

from ... import API_VERSION
from ..backend import ContainerBackend, ImageBackend
from ..params import json_response, query_filters, query_time
from ..workers import Workers
from . import Route

_PING_HEADERS = {"Api-Version": API_VERSION, "Builder-Version": "1", "Docker-Experimental": "false",
                 "Ostype": "linux", "Cache-Control": "no-cache, no-store, must-revalidate",
                 "Pragma": "no-cache", "Swarm": "inactive"}


class SystemRoutes:
    def __init__(self, engine: ContainerBackend, images: ImageBackend, workers: Workers,
                 build_cache: Callable[[], list[dict]] = list) -> None:
        self.engine, self.images, self.workers = engine, images, workers
        self.build_cache = build_cache   # the build cache's records (BuildService.usage)

    def routes(self) -> list[Route]:
        return [("GET", "/_ping", self.ping), ("HEAD", "/_ping", self.ping),
                ("GET", "/version", self.version), ("GET", "/info", self.info),
                ("GET", "/events", self.events), ("GET", "/system/df", self.df)]

    async def ping(self, request: web.Request) -> web.Response:
        if request.method == "HEAD":
            return web.Response(status=200, headers=_PING_HEADERS, content_type="text/plain")
        return web.Response(text="OK", headers=_PING_HEADERS, content_type="text/plain")

    async def version(self, request: web.Request) -> web.Response:
        return json_response(await self.workers.run(self.engine.version))

    async def info(self, request: web.Request) -> web.Response:
        info = await self.workers.run(self.engine.info)
        info["RegistryConfig"] = self.images.registry_config()  # (the registries are the images')
        return json_response(info)

    async def events(self, request: web.Request) -> web.StreamResponse:
        since, until = query_time(request, "since"), query_time(request, "until")
        filters = query_filters(request)
        resp = web.StreamResponse(status=200)
        resp.content_type = "application/json"
        await resp.prepare(request)
        stopping = self.workers.stopping
        async for event in self.workers.iterate(
                lambda: self.engine.events_stream(since, until, filters, stop=stopping)):
            await resp.write(json.dumps(event).encode() + b"\n")
        await resp.write_eof()
        return resp

    async def df(self, request: web.Request) -> web.Response:
        def usage() -> dict:
            return {"LayersSize": self.images.layers_size(), "Images": self.images.summaries(),
                    "Containers": self.engine.list(True, {}),
                    "Volumes": self.engine.volume_list({}).get("Volumes"), "BuildCache": self.build_cache()}
        return json_response(await self.workers.run(usage))
