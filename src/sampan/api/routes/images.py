"""/images/...: list, inspect, history, tag, remove, prune, pull (create), load, save (get)."""
from __future__ import annotations

import asyncio
import os
import tempfile

from aiohttp import web

from ... import errors
from ..backend import ImageBackend
from ..params import json_line, json_response, query_bool, query_filters
from ..status import message_of
from ..workers import Workers
from . import Route

_CHUNK = 1 << 20


def _error_message(exc: BaseException) -> dict:
    """How a failure after the 200 is reported in a JSON progress stream, as dockerd does."""
    msg = message_of(exc)
    return {"errorDetail": {"message": msg}, "error": msg}


class ImageRoutes:
    def __init__(self, images: ImageBackend, workers: Workers, scratch_dir: str) -> None:
        self.images, self.workers = images, workers
        self.scratch_dir = scratch_dir  # where archives are spooled

    def routes(self) -> list[Route]:
        i = "/images/{name:.+}"
        return [
            ("GET", "/images/json", self.list), ("POST", "/images/create", self.create),
            ("POST", "/images/load", self.load), ("GET", "/images/get", self.get),
            ("POST", "/images/prune", self.prune),
            ("GET", i + "/json", self.inspect), ("GET", i + "/history", self.history),
            ("GET", i + "/get", self.get), ("POST", i + "/tag", self.tag), ("DELETE", i, self.delete),
        ]

    async def list(self, request: web.Request) -> web.Response:
        return json_response(await self.workers.run(self.images.summaries, query_bool(request, "all"),
                                                    query_filters(request)))

    async def inspect(self, request: web.Request) -> web.Response:
        return json_response(await self.workers.run(self.images.inspect, request.match_info["name"]))

    async def history(self, request: web.Request) -> web.Response:
        return json_response(await self.workers.run(self.images.history, request.match_info["name"]))

    async def tag(self, request: web.Request) -> web.Response:
        repo = request.query.get("repo")
        if not repo:
            raise errors.Invalid("repository name must have at least one component")
        tag = request.query.get("tag")
        await self.workers.run(self.images.tag, request.match_info["name"], f"{repo}:{tag}" if tag else repo)
        return web.Response(status=201)

    async def delete(self, request: web.Request) -> web.Response:
        return json_response(await self.workers.run(self.images.remove, request.match_info["name"],
                                                    query_bool(request, "force"), not query_bool(request, "noprune")))

    async def prune(self, request: web.Request) -> web.Response:
        dangling = (query_filters(request).get("dangling") or ["true"])[0].lower() in ("1", "true")
        return json_response(await self.workers.run(self.images.prune, dangling, long=True))

    async def create(self, request: web.Request) -> web.StreamResponse:
        src = request.query.get("fromImage")
        if not src:
            raise errors.Invalid("fromSrc import is not supported; use fromImage")
        tag = request.query.get("tag") or ""
        ref = src
        if tag:
            ref = f"{src}@{tag}" if tag.startswith("sha256:") else f"{src}:{tag}"
        resp = web.StreamResponse(status=200)
        resp.content_type = "application/json"
        await resp.prepare(request)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def progress(msg: dict) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, msg)

        fut = asyncio.ensure_future(self.workers.run(self.images.pull, ref, progress, long=True))
        fut.add_done_callback(lambda f: queue.put_nowait(None))
        while (msg := await queue.get()) is not None:
            await resp.write(json_line(msg))
        try:
            fut.result()
        except Exception as e:  # noqa: BLE001 - the status is sent: the error goes in the stream
            await resp.write(json_line(_error_message(e)))
        await resp.write_eof()
        return resp

    async def load(self, request: web.Request) -> web.StreamResponse:
        os.makedirs(self.scratch_dir, exist_ok=True)
        with tempfile.TemporaryFile(prefix="load-", dir=self.scratch_dir) as spool:
            async for chunk in request.content.iter_chunked(_CHUNK):
                await self.workers.run(spool.write, chunk)
            spool.seek(0)
            lines = await self.workers.run(self.images.load, spool, None, long=True)
        resp = web.StreamResponse(status=200)
        resp.content_type = "application/json"
        await resp.prepare(request)
        for line in lines:
            await resp.write(json_line({"stream": line + "\n"}))
        await resp.write_eof()
        return resp

    async def get(self, request: web.Request) -> web.StreamResponse:
        names = [request.match_info["name"]] if "name" in request.match_info else request.query.getall("names", [])
        if not names:
            raise errors.Invalid("no image names given")
        await self.workers.run(self.images.check_names, names)
        os.makedirs(self.scratch_dir, exist_ok=True)
        with tempfile.TemporaryFile(prefix="save-", dir=self.scratch_dir) as spool:
            await self.workers.run(self.images.save, names, spool, long=True)
            spool.seek(0)
            resp = web.StreamResponse(status=200)
            resp.content_type = "application/x-tar"
            await resp.prepare(request)
            while chunk := await self.workers.run(spool.read, _CHUNK):
                await resp.write(chunk)
            await resp.write_eof()
            return resp
